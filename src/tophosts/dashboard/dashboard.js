// tophosts dashboard: polls /stats and /metrics every 2 s and draws two bar charts.
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
  const panels = [...document.querySelectorAll(".panels > .panel")].map(
    (section) => new Panel(section),
  );
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
