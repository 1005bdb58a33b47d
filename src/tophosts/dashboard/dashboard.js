// tophosts dashboard: polls /stats and /metrics every 2 s and draws two bar charts, and
// below them a timeline of the past hour's top 5 hosts over the last 60 closed minutes
// (from /stats/history, fetched again when a minute closes), drawn as an SVG built with
// DOM calls.
// Host names are untrusted: they only ever reach the page through textContent and
// title, never as markup. Styles are set through the CSSOM (element.style), which
// the page's Content-Security-Policy allows; there is no inline script or style.
// A server started with --read-token answers 401 until the page sends a token: the
// page then asks for one and keeps it in sessionStorage (this tab only), never in the
// URL, localStorage or the page's text.
"use strict";

(() => {
  const POLL_MS = 2000;
  const TIMEOUT_MS = 5000;
  const RATE_SPAN_MS = 10000;
  const LIMITS = [5, 10, 25, 50];
  const WINDOW_SECONDS = { minute: 60, hour: 3600 };
  const TOKEN_KEY = "tophosts.readToken";
  const TOKEN_TEXT = /^[\x21-\x7e]+$/; // printable ASCII without spaces, as the server takes
  const ASKING = "This server asks for a token to show its stats.";
  const SVG = "http://www.w3.org/2000/svg";
  const TIMELINE_MINUTES = 60;
  const TIMELINE_HOSTS = 5;
  const MINUTE_TOP = 10;
  // The chart's drawing area inside its viewBox (0 0 600 180).
  const PLOT = { left: 4, right: 596, top: 14, bottom: 172 };

  const $ = (selector, root = document) => root.querySelector(selector);
  const numbers = new Intl.NumberFormat();

  // -- time labels ---------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");

  function utcClock(date, seconds) {
    const hm = `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}`;
    return seconds ? `${hm}:${pad(date.getUTCSeconds())}` : hm;
  }

  function utcDay(date) {
    return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}`;
  }

  const localTime = {
    minute: new Intl.DateTimeFormat(undefined, {
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    }),
    hour: new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" }),
  };
  const localFull = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium", timeStyle: "long",
  });

  function zoneName(date) {
    const parts = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(date);
    const zone = parts.find((part) => part.type === "timeZoneName");
    return zone ? zone.value : "local";
  }

  function range(format, start, end) {
    return typeof format.formatRange === "function"
      ? format.formatRange(start, end)
      : `${format.format(start)} – ${format.format(end)}`;
  }

  // -- host order: count descending, then host by code point, as the server sorts -------
  // JavaScript objects list integer-like keys ("42") first, so the order of the JSON
  // object cannot be trusted once parsed; sort again the way the server does.

  function codeUnitKey(unit) {
    // Make UTF-16 code-unit order agree with code-point order.
    if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
    if (unit >= 0xe000) return unit - 0x800;
    return unit;
  }

  function compareHosts(a, b) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i += 1) {
      const x = a.charCodeAt(i);
      const y = b.charCodeAt(i);
      if (x !== y) return codeUnitKey(x) - codeUnitKey(y);
    }
    return a.length - b.length;
  }

  function ordered(topHosts) {
    return Object.entries(topHosts).sort((a, b) => b[1] - a[1] || compareHosts(a[0], b[0]));
  }

  // -- a panel -------------------------------------------------------------------------

  class Panel {
    constructor(section) {
      this.section = section;
      this.kind = section.dataset.window;
      this.list = $(".bars", section);
      this.empty = $(".empty", section);
      this.windowEl = $(".window", section);
      this.utc = $(".utc", section);
      this.local = $(".local", section);
      this.rows = new Map(); // host -> row
      this.dataKey = null;
      this.windowKey = null;
      this.renders = 0;
    }

    /** Forget what is shown, as on a fresh page. */
    reset() {
      this.list.replaceChildren();
      this.rows.clear();
      this.list.hidden = false;
      this.empty.hidden = true;
      this.dataKey = null;
      this.windowKey = null;
      this.utc.textContent = "\u2013";
      this.local.textContent = "";
      this.windowEl.removeAttribute("title");
    }

    /** Show the window [start, end) (Unix seconds) and the hosts; touch nothing that did not change. */
    show(start, end, topHosts) {
      const windowKey = `${start}/${end}`;
      if (windowKey !== this.windowKey) {
        this.windowKey = windowKey;
        this.label(new Date(start * 1000), new Date(end * 1000));
      }
      const entries = ordered(topHosts);
      const dataKey = JSON.stringify(entries);
      if (dataKey === this.dataKey) return;
      this.dataKey = dataKey;
      this.draw(entries);
      this.renders += 1;
      this.section.dataset.renders = String(this.renders);
    }

    label(start, end) {
      const seconds = this.kind === "minute";
      this.utc.textContent = `${utcClock(start, seconds)}–${utcClock(end, seconds)} UTC`;
      const local = localTime[this.kind];
      this.local.textContent = `${range(local, start, end)} ${zoneName(end)}`;
      this.windowEl.title =
        `UTC: ${utcDay(start)} ${utcClock(start, true)} – ${utcClock(end, true)}\n` +
        `Local: ${range(localFull, start, end)}`;
    }

    draw(entries) {
      const list = this.list;
      if (entries.length === 0) {
        list.replaceChildren();
        this.rows.clear();
        list.hidden = true;
        this.empty.hidden = false;
        return;
      }
      this.empty.hidden = true;
      list.hidden = false;

      // FLIP: note where each row was, put the rows in their new order, move them back
      // to where they were without a transition, then let them glide to their places.
      const before = new Map();
      for (const [host, row] of this.rows) before.set(host, row.el.getBoundingClientRect().top);

      const max = entries[0][1];
      const live = new Set();
      let previous = null;
      for (const [host, count] of entries) {
        let row = this.rows.get(host);
        if (!row) {
          row = makeRow(host);
          this.rows.set(host, row);
        }
        live.add(host);
        row.count.textContent = numbers.format(count);
        row.el.dataset.count = String(count);
        row.el.title = `${host}: ${numbers.format(count)}`;
        row.target = max > 0 ? `${((count / max) * 100).toFixed(2)}%` : "0%";
        const next = previous ? previous.nextSibling : list.firstChild;
        if (next !== row.el) list.insertBefore(row.el, next);
        previous = row.el;
      }
      for (const [host, row] of this.rows) {
        if (!live.has(host)) {
          row.el.remove();
          this.rows.delete(host);
        }
      }

      for (const [host, row] of this.rows) {
        row.el.classList.add("still");
        const top = before.get(host);
        if (top === undefined) {
          row.el.classList.add("entering");
        } else {
          const dy = top - row.el.getBoundingClientRect().top;
          row.el.style.transform = dy ? `translateY(${dy}px)` : "";
        }
        row.bar.style.width = row.shown;
      }
      void list.offsetWidth; // commit the "before" state so the changes below transition
      for (const row of this.rows.values()) {
        row.el.classList.remove("still", "entering");
        row.el.style.transform = "";
        row.bar.style.width = row.target;
        row.shown = row.target;
      }
    }
  }

  function makeRow(host) {
    const el = document.createElement("li");
    el.className = "row";
    const name = document.createElement("span");
    name.className = "host";
    name.textContent = host;
    name.title = host;
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    const count = document.createElement("span");
    count.className = "count";
    track.append(bar, count);
    el.append(name, track);
    el.dataset.host = host;
    return { el, bar, count, shown: "0%", target: "0%" };
  }

  // -- the timeline ------------------------------------------------------------------

  function svg(tag, attributes = {}) {
    const el = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, String(value));
    return el;
  }

  function minuteLabel(start) {
    const date = new Date(start * 1000);
    return `${utcClock(date, false)}–${utcClock(new Date((start + 60) * 1000), false)} UTC`;
  }

  class Timeline {
    constructor(section) {
      this.section = section;
      this.note = $("#timeline-note", section);
      this.empty = $(".empty", section);
      this.body = $(".timeline-body", section);
      this.legend = $(".legend", section);
      this.chart = $("svg.lines", section);
      this.ymax = $(".ymax", section);
      this.first = $(".axis .first", section);
      this.last = $(".axis .last", section);
      this.utc = $(".window .utc", section);
      this.local = $(".window .local", section);
      this.title = $(".minute-title", section);
      this.titleLocal = $(".minute-local", section);
      this.minuteEmpty = $(".minute-empty", section);
      this.minuteTop = $(".minute-top", section);
      this.to = null; // the range [to - 3600, to) fetched, or null
      this.windows = []; // [{start, end, entries}] oldest first
      this.hourHosts = [];
      this.hosts = [];
      this.selected = null; // the start of the selected minute
      this.drawn = null;
      // A click on a minute's column (or on one of its points) selects that minute.
      this.chart.addEventListener("click", (event) => {
        const start = event.target.dataset ? event.target.dataset.start : undefined;
        if (start !== undefined) this.select(Number(start));
      });
      this.chart.addEventListener("keydown", (event) => this.key(event));
    }

    reset() {
      this.to = null;
      this.windows = [];
      this.hourHosts = [];
      this.drawn = null;
      this.selected = null;
      this.chart.replaceChildren();
      this.legend.replaceChildren();
      this.minuteTop.replaceChildren();
      this.body.hidden = true;
      this.empty.hidden = true;
      this.utc.textContent = "\u2013";
      this.local.textContent = "";
      this.title.textContent = "\u2013";
      this.titleLocal.textContent = "";
      delete this.section.dataset.from;
      delete this.section.dataset.to;
      delete this.section.dataset.selected;
    }

    /** Whether the windows up to ``to`` (the past minute's start) are to be fetched. */
    wants(to) {
      return to !== this.to;
    }

    /** Show the windows of /stats/history for [to - 3600, to) and the past hour's hosts. */
    show(to, windows, hourTop) {
      this.to = to;
      this.windows = windows.map((w) => ({
        start: w.start,
        end: w.end,
        entries: ordered(w.top_hosts),
        counts: new Map(Object.entries(w.top_hosts)),
      }));
      this.hourHosts = ordered(hourTop).slice(0, TIMELINE_HOSTS).map(([host]) => host);
      const starts = this.windows.map((w) => w.start);
      if (!starts.includes(this.selected)) this.selected = starts.length ? starts.at(-1) : null;
      this.draw();
    }

    /** The past hour's top hosts changed (its panel polls them): redraw if need be. */
    hour(hourTop) {
      const hosts = ordered(hourTop).slice(0, TIMELINE_HOSTS).map(([host]) => host);
      if (JSON.stringify(hosts) === JSON.stringify(this.hourHosts)) return;
      this.hourHosts = hosts;
      if (this.to !== null) this.draw();
    }

    failed(message) {
      this.note.textContent = message;
      this.note.classList.add("error");
      this.to = null; // fetch again on the next poll
    }

    /** The hosts to draw: the past hour's top 5, or, if it has none, these minutes'. */
    chooseHosts() {
      if (this.hourHosts.length) return this.hourHosts;
      const sums = new Map();
      for (const w of this.windows) {
        for (const [host, count] of w.entries) sums.set(host, (sums.get(host) || 0) + count);
      }
      return ordered(Object.fromEntries(sums))
        .slice(0, TIMELINE_HOSTS)
        .map(([host]) => host);
    }

    draw() {
      const hosts = this.chooseHosts();
      const key = JSON.stringify([this.to, hosts, this.windows.map((w) => w.entries)]);
      if (key !== this.drawn) {
        this.drawn = key;
        this.hosts = hosts;
        this.drawChart();
      }
      this.drawMinute();
    }

    drawChart() {
      const windows = this.windows;
      const section = this.section;
      this.note.classList.remove("error");
      this.note.textContent = this.hourHosts.length
        ? "The past hour\u2019s top 5 hosts over the last 60 closed minutes, from " +
          "/stats/history. Select a minute to see its top 10."
        : "The top 5 hosts of the last 60 closed minutes (the past hour has none yet). " +
          "Select a minute to see its top 10.";
      section.dataset.from = String(this.to - TIMELINE_MINUTES * 60);
      section.dataset.to = String(this.to);
      const from = new Date((this.to - TIMELINE_MINUTES * 60) * 1000);
      const to = new Date(this.to * 1000);
      this.utc.textContent = `${utcClock(from, false)}–${utcClock(to, false)} UTC`;
      this.local.textContent = `${range(localTime.hour, from, to)} ${zoneName(to)}`;
      this.first.textContent = utcClock(from, false);
      this.last.textContent = utcClock(to, false);

      const anyData = windows.some((w) => w.entries.length);
      this.empty.hidden = anyData;
      this.body.hidden = !anyData;
      const chart = this.chart;
      chart.replaceChildren();
      this.legend.replaceChildren();
      if (!anyData) return;

      const width = (PLOT.right - PLOT.left) / TIMELINE_MINUTES;
      const x = (start) =>
        PLOT.left + (((start - (this.to - TIMELINE_MINUTES * 60)) / 60) + 0.5) * width;
      let max = 0;
      for (const w of windows) {
        for (const host of this.hosts) max = Math.max(max, w.counts.get(host) || 0);
      }
      const y = (count) =>
        PLOT.bottom - (max > 0 ? (count / max) * (PLOT.bottom - PLOT.top) : 0);
      section.dataset.max = String(max);
      this.ymax.textContent = max ? numbers.format(max) : "";

      this.band = svg("rect", { class: "band", y: 0, width, height: 180 });
      chart.append(
        this.band,
        svg("line", { class: "grid", x1: PLOT.left, x2: PLOT.right, y1: PLOT.top, y2: PLOT.top }),
        svg("line", {
          class: "grid", x1: PLOT.left, x2: PLOT.right, y1: PLOT.bottom, y2: PLOT.bottom,
        }),
      );
      // Columns to click, one per minute, under the lines and points.
      for (const w of windows) {
        const hit = svg("rect", {
          class: "hit", x: (x(w.start) - width / 2).toFixed(2), y: 0, width, height: 180,
        });
        hit.dataset.start = String(w.start);
        const tip = svg("title");
        tip.textContent = minuteLabel(w.start);
        hit.append(tip);
        chart.append(hit);
      }
      this.hosts.forEach((host, i) => {
        const item = document.createElement("li");
        item.dataset.host = host;
        const swatch = document.createElement("span");
        swatch.className = `swatch s${i}`;
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = host;
        name.title = host;
        item.append(swatch, name);
        this.legend.append(item);

        // One polyline per run of minutes in which the host is in the top 10; a
        // minute where it is not (its count is not known) breaks the line.
        let run = [];
        const flush = () => {
          if (run.length > 1) {
            chart.append(svg("polyline", { class: `line s${i}`, points: run.join(" ") }));
          }
          run = [];
        };
        for (const w of windows) {
          const count = w.counts.get(host);
          if (count === undefined) {
            flush();
            continue;
          }
          run.push(`${x(w.start).toFixed(2)},${y(count).toFixed(2)}`);
        }
        flush();
        for (const w of windows) {
          const count = w.counts.get(host);
          if (count === undefined) continue;
          const point = svg("circle", {
            class: `point s${i}`, cx: x(w.start).toFixed(2), cy: y(count).toFixed(2), r: 2.6,
          });
          point.dataset.host = host;
          point.dataset.start = String(w.start);
          point.dataset.count = String(count);
          const tip = svg("title");
          tip.textContent = `${host}: ${numbers.format(count)} in ${minuteLabel(w.start)}`;
          point.append(tip);
          chart.append(point);
        }
      });
      this.x = x;
      this.width = width;
    }

    select(start) {
      if (!this.windows.some((w) => w.start === start)) return;
      this.selected = start;
      this.drawMinute();
    }

    key(event) {
      const starts = this.windows.map((w) => w.start);
      const at = starts.indexOf(this.selected);
      const moves = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: starts.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const next = Math.min(starts.length - 1, Math.max(0, moves[event.key]));
      if (starts.length) this.select(starts[next]);
    }

    drawMinute() {
      const w = this.windows.find((one) => one.start === this.selected);
      this.minuteTop.replaceChildren();
      if (!w) return;
      this.section.dataset.selected = String(w.start);
      if (this.band && this.x) this.band.setAttribute("x", (this.x(w.start) - this.width / 2).toFixed(2));
      this.title.textContent = `Top ${MINUTE_TOP} of ${minuteLabel(w.start)}`;
      const start = new Date(w.start * 1000);
      const end = new Date(w.end * 1000);
      this.titleLocal.textContent = `${range(localTime.minute, start, end)} ${zoneName(end)}`;
      this.minuteEmpty.hidden = w.entries.length > 0;
      for (const [host, count] of w.entries.slice(0, MINUTE_TOP)) {
        const item = document.createElement("li");
        item.dataset.host = host;
        item.dataset.count = String(count);
        const entry = document.createElement("span");
        entry.className = "entry";
        const name = document.createElement("span");
        name.className = "host";
        name.textContent = host;
        name.title = host;
        const figure = document.createElement("span");
        figure.className = "count";
        figure.textContent = numbers.format(count);
        entry.append(name, figure);
        item.append(entry);
        this.minuteTop.append(item);
      }
    }
  }

  // -- /metrics --------------------------------------------------------------------

  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels = {};
      for (const label of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[label[1]] = label[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
      samples.push({ name: match[1], labels, value: Number(match[3]) });
    }
    return samples;
  }

  function find(samples, name, labels = {}) {
    return samples.find(
      (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
    );
  }

  // -- state and polling -------------------------------------------------------------

  // The token form is a .panel too, so look inside <main> only.
  const panels = [...document.querySelectorAll(".panels > .panel[data-window]")].map(
    (section) => new Panel(section),
  );
  const timeline = new Timeline($("#timeline"));
  const limitSelect = $("#limit");
  const pauseButton = $("#pause");
  const banner = $("#banner");
  const bannerDetail = $("#banner-detail");
  const status = $("#status");
  const main = $(".panels");
  const signin = $("#signin");
  const tokenForm = $("#token-form");
  const tokenInput = $("#token");
  const tokenMessage = $("#token-message");
  const tokenError = $("#token-error");
  const signedIn = $("#signed-in");
  const blankFigures = ["#rate", "#tracked", "#store", "#tracked-box", "#store-box"].map((id) => {
    const el = $(id);
    return [el, el.textContent, el.title];
  });

  const state = {
    limit: 10,
    paused: false,
    locked: false, // the server wants a read token and the page is asking for one
    token: null,
    timer: 0,
    inflight: false,
    again: false,
    rates: [], // [performance.now(), accepted events] over the last 10 s
  };

  class Unhealthy extends Error {}

  /** A 401: the token sent with the request (null for none) was not good enough. */
  class Unauthorized extends Error {
    constructor(token) {
      super("unauthorized");
      this.token = token;
    }
  }

  async function get(url, token) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(url, {
      cache: "no-store",
      headers,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (response.status === 401) throw new Unauthorized(token);
    if (!response.ok) {
      let detail = `${url} answered ${response.status}`;
      try {
        const body = await response.json();
        if (typeof body.error === "string") detail = body.error;
      } catch {
        // not JSON: keep the status line
      }
      throw new Unhealthy(detail);
    }
    return response;
  }

  async function stats(kind, limit, token) {
    const response = await get(`/stats?stats_type=${kind}&limit=${limit}`, token);
    const body = await response.json();
    let start = Number(response.headers.get("X-Window-Start"));
    let end = Number(response.headers.get("X-Window-End"));
    if (!response.headers.has("X-Window-Start") || !Number.isFinite(start + end)) {
      // An older server: fall back on this browser's clock.
      const size = WINDOW_SECONDS[kind];
      end = Math.floor(Date.now() / 1000 / size) * size;
      start = end - size;
    }
    return { start, end, topHosts: body.top_hosts };
  }

  async function metrics(token) {
    return parseMetrics(await (await get("/metrics", token)).text());
  }

  /** The windows of /stats/history for the 60 minutes before ``to``, oldest first. */
  async function minutes(to, token) {
    const from = to - TIMELINE_MINUTES * 60;
    const url = `/stats/history?stats_type=minute&from=${from}&to=${to}&limit=${MINUTE_TOP}`;
    const body = await (await get(url, token)).json();
    return body.windows;
  }

  function showFigures(samples) {
    const accepted = find(samples, "tophosts_events_total", { result: "accepted" });
    if (accepted) {
      const now = performance.now();
      const rates = state.rates;
      if (rates.length && accepted.value < rates[rates.length - 1][1]) rates.length = 0; // restarted
      rates.push([now, accepted.value]);
      while (rates.length > 2 && rates[1][0] <= now - RATE_SPAN_MS) rates.shift();
      const [t0, v0] = rates[0];
      if (rates.length > 1 && now > t0) {
        const rate = ((accepted.value - v0) * 1000) / (now - t0);
        $("#rate").textContent =
          rate < 100 ? rate.toFixed(1) : numbers.format(Math.round(rate));
      }
    }
    const minute = find(samples, "tophosts_tracked_hosts", { window: "minute" });
    const hour = find(samples, "tophosts_tracked_hosts", { window: "hour" });
    if (hour) {
      $("#tracked").textContent = numbers.format(hour.value);
      $("#tracked-box").title =
        "(host, window) pairs held, from /metrics: " +
        `${numbers.format(hour.value)} over the live hour windows` +
        (minute ? `, ${numbers.format(minute.value)} over the live minute windows` : "");
    }
    const info = find(samples, "tophosts_info");
    if (info) {
      $("#store").textContent = info.labels.store || "?";
      $("#store-box").title = `tophosts ${info.labels.version || ""}, ${info.labels.store} store`;
    }
  }

  function setHealthy(healthy, detail) {
    banner.hidden = healthy;
    main.classList.toggle("stale", !healthy);
    if (healthy) {
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } else {
      bannerDetail.textContent = detail;
      status.textContent = "Waiting for the server…";
      state.rates.length = 0;
    }
  }

  async function poll() {
    const { limit, token } = state;
    try {
      const [minute, hour, samples] = await Promise.all([
        stats("minute", limit, token),
        stats("hour", limit, token),
        metrics(token),
      ]);
      if (state.paused || state.locked || token !== state.token) return;
      if (limit !== state.limit) return; // a newer poll follows
      const answers = { minute, hour };
      for (const panel of panels) {
        const answer = answers[panel.kind];
        panel.show(answer.start, answer.end, answer.topHosts);
      }
      showFigures(samples);
      setHealthy(true);
      // The closed minutes change only when a minute closes: fetch them again then.
      if (timeline.wants(minute.start)) {
        try {
          const windows = await minutes(minute.start, token);
          if (state.paused || state.locked || token !== state.token) return;
          timeline.show(minute.start, windows, hour.topHosts);
        } catch (error) {
          if (error instanceof Unauthorized) throw error;
          timeline.failed(
            error instanceof Unhealthy
              ? `The timeline cannot be shown: ${error.message}`
              : "The timeline cannot be shown for now; trying again.",
          );
        }
      } else {
        timeline.hour(hour.topHosts);
      }
    } catch (error) {
      if (state.paused || state.locked || token !== state.token) return;
      if (error instanceof Unauthorized) {
        if (token) {
          forgetToken();
          lock("That token was not accepted; it may be mistyped or withdrawn. Try again.");
        } else {
          lock();
        }
        return;
      }
      setHealthy(
        false,
        error instanceof Unhealthy
          ? `${error.message}. Retrying every 2 s.`
          : "Retrying every 2 s; the figures below are from the last answer.",
      );
    }
  }

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(tick, delay);
  }

  async function tick() {
    if (state.paused || state.locked) return;
    if (state.inflight) {
      state.again = true;
      return;
    }
    state.inflight = true;
    const started = performance.now();
    try {
      await poll();
    } finally {
      state.inflight = false;
    }
    if (state.paused || state.locked) return;
    const again = state.again;
    state.again = false;
    schedule(again ? 0 : Math.max(0, POLL_MS - (performance.now() - started)));
  }

  function setPaused(paused) {
    state.paused = paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (paused) {
      clearTimeout(state.timer);
      status.textContent = "Paused";
    } else {
      state.rates.length = 0; // a rate across the pause would mislead
      schedule(0);
    }
  }

  // -- the read token ----------------------------------------------------------------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || null;
    } catch {
      return null;
    }
  }

  function keepToken(token) {
    state.token = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // storage may be off; the token still holds for this page
    }
    signedIn.hidden = false;
  }

  function forgetToken() {
    state.token = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // nothing stored
    }
    signedIn.hidden = true;
  }

  function askAgain(problem) {
    tokenError.textContent = problem;
    tokenError.hidden = false;
    tokenInput.setAttribute("aria-invalid", "true");
    tokenInput.focus();
  }

  /** Stop polling, hide the figures and ask for a token; ``problem`` says what went wrong. */
  function lock(problem, note = ASKING) {
    state.locked = true;
    clearTimeout(state.timer);
    state.rates.length = 0;
    for (const panel of panels) panel.reset();
    timeline.reset();
    for (const [el, text, title] of blankFigures) {
      if (el.children.length === 0) el.textContent = text;
      el.title = title;
    }
    banner.hidden = true; // a refusal is an answer: the server is reachable
    main.classList.remove("stale");
    main.hidden = true;
    pauseButton.disabled = true; // nothing to pause until the server answers
    signin.hidden = false;
    tokenInput.value = "";
    tokenMessage.textContent = note;
    status.textContent = "Waiting for a read token";
    if (problem) {
      askAgain(problem);
    } else {
      tokenError.hidden = true;
      tokenError.textContent = "";
      tokenInput.setAttribute("aria-invalid", "false");
      tokenInput.focus();
    }
  }

  function unlock() {
    state.locked = false;
    signin.hidden = true;
    main.hidden = false;
    pauseButton.disabled = false;
    tokenError.hidden = true;
    tokenError.textContent = "";
    tokenInput.setAttribute("aria-invalid", "false");
    status.textContent = "Connecting…";
    if (!state.paused) schedule(0);
  }

  tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = tokenInput.value.trim();
    tokenInput.value = "";
    if (!token) {
      askAgain("Enter the read token.");
      return;
    }
    if (!TOKEN_TEXT.test(token)) {
      askAgain("That cannot be a token: tokens are printable ASCII characters without spaces.");
      return;
    }
    keepToken(token);
    unlock();
  });
  $("#forget").addEventListener("click", () => {
    forgetToken();
    lock(null, "The token is forgotten. Enter a read token to see the stats again.");
  });

  // -- controls --------------------------------------------------------------------

  function storedLimit() {
    try {
      const n = Number(localStorage.getItem("tophosts.limit"));
      return LIMITS.includes(n) ? n : 10;
    } catch {
      return 10;
    }
  }

  state.limit = storedLimit();
  limitSelect.value = String(state.limit);
  limitSelect.addEventListener("change", () => {
    const n = Number(limitSelect.value);
    if (!LIMITS.includes(n)) return;
    state.limit = n;
    try {
      localStorage.setItem("tophosts.limit", String(n));
    } catch {
      // storage may be off; the choice still holds for this page
    }
    if (!state.paused) schedule(0);
  });
  pauseButton.addEventListener("click", () => setPaused(!state.paused));
  $("#controls").addEventListener("submit", (event) => event.preventDefault());

  state.token = storedToken();
  signedIn.hidden = !state.token;
  schedule(0);
})();
