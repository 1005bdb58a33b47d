"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a
real server process on the real clock.

Events are posted at ``now - 60`` (always in the past minute) and ``now - 3600``
(always in the past hour). A test that needs a window to hold still for a while
first waits, if need be, for that window to turn.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import Server, with_history

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT = 6_000  # ms: three polls of the page
DASH = "\N{EN DASH}"
POSITIVE = re.compile(r"^(?!0(\.0)?$)\d[\d,]*(\.\d)?$")  # as the page shows a rate > 0


def _need(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(what)


try:
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Dialog,
        Page,
        Request,
        expect,
        sync_playwright,
    )
except ImportError:  # pragma: no cover - the dev extras install it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _need("the playwright package is not installed")
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _need(f"{CHROMIUM} is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Problems(list[str]):
    """Script errors and console errors seen by a page."""

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.append(f"console: {message.text}")


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
def page(browser: Browser, problems: Problems, request: pytest.FixtureRequest) -> Iterator[Page]:
    # India has no daylight saving time, and its half-hour offset shows that the
    # local line is really converted.
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-US", timezone_id="Asia/Kolkata"
    )
    page = context.new_page()
    page.on("console", problems.console)
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    context.close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server("--log-level", "warning")
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
    srv.stop()


def hold_still(size: int, seconds: float) -> None:
    """Wait, if need be, until the current ``size``-second window has ``seconds`` left."""
    left = size - time.time() % size
    if left < seconds:
        time.sleep(left + 0.05)


def post(server: Server, *events: dict[str, Any]) -> None:
    response = httpx.post(server.url + "/counters", json=list(events))
    assert response.status_code == 200, response.text
    assert response.json()["expired"] == 0


def utc_label(start: int, end: int, seconds: bool) -> str:
    form = "%H:%M:%S" if seconds else "%H:%M"
    start_at, end_at = (datetime.fromtimestamp(t, UTC).strftime(form) for t in (start, end))
    return f"{start_at}{DASH}{end_at} UTC"


def kolkata_day(t: int) -> int:
    """The day number of ``t`` at UTC+05:30."""
    return (t + 5 * 3600 + 1800) // 86400


def kolkata_clock(t: int) -> str:
    """``h:mm`` of ``t`` on a 12-hour clock at UTC+05:30."""
    t += 5 * 3600 + 1800
    return f"{(t // 3600 % 24) % 12 or 12}:{t // 60 % 60:02}"


def bars_in_proportion(page: Page, panel: str, counts: list[int]) -> None:
    """Wait until each bar's length over the first one's is its count over the first's."""
    page.wait_for_function(
        """([panel, counts]) => {
            const bars = [...document.querySelectorAll(`#${panel} .bar`)];
            if (bars.length !== counts.length) return false;
            const full = bars[0].getBoundingClientRect().width;
            return bars.every((bar, i) => Math.abs(
                bar.getBoundingClientRect().width - Math.max(3, full * counts[i] / counts[0])
            ) < 1.5);
        }""",
        arg=[panel, counts],
        timeout=WAIT,
    )


def test_bars_show_the_top_hosts_in_order_and_update_without_reload(
    server: Server, page: Page, problems: Problems
) -> None:
    hold_still(60, 12)
    now = int(time.time())
    # "42" would come first out of a JavaScript object; the page must keep the server's order.
    post(
        server,
        {"timestamp": now - 60, "a.example": 5, "42": 4, "c.example": 3, "b.example": 3},
        {"timestamp": now - 3600, "h1.example": 10, "h2.example": 7},
    )
    minute = httpx.get(server.url + "/stats").headers
    hour = httpx.get(server.url + "/stats?stats_type=hour").headers
    page.goto(server.url + "/")

    expect(page.locator("#minute .row .host")).to_have_text(
        ["a.example", "42", "b.example", "c.example"], timeout=WAIT
    )
    expect(page.locator("#minute .count")).to_have_text(["5", "4", "3", "3"])
    expect(page.locator("#hour .row .host")).to_have_text(["h1.example", "h2.example"])
    expect(page.locator("#hour .count")).to_have_text(["10", "7"])
    # Bar lengths are proportional to the counts, once their transition has run.
    bars_in_proportion(page, "minute", [5, 4, 3, 3])
    bars_in_proportion(page, "hour", [10, 7])
    # The windows, in UTC from the server's headers, and in local time on a second line.
    m_start, m_end = int(minute["x-window-start"]), int(minute["x-window-end"])
    h_start, h_end = int(hour["x-window-start"]), int(hour["x-window-end"])
    expect(page.locator("#minute .utc")).to_have_text(utc_label(m_start, m_end, True))
    expect(page.locator("#hour .utc")).to_have_text(utc_label(h_start, h_end, False))
    # Across a local midnight (18:30 to 19:30 UTC here), each end names its date too.
    day = r"\d{1,2}/\d{1,2}/\d{4}, " if kolkata_day(h_start) != kolkata_day(h_end) else ""
    start, end = kolkata_clock(h_start), kolkata_clock(h_end)
    local = rf"^{day}0?{start}( [AP]M)? {DASH} {day}0?{end} [AP]M GMT\+5:30$"
    expect(page.locator("#hour .local")).to_have_text(re.compile(local))
    expect(page.locator("#hour .window")).to_have_attribute(
        "title", re.compile(rf"^UTC: \d{{4}}-\d\d-\d\d \d\d:00:00 {DASH} \d\d:00:00\nLocal: ")
    )
    # The header, from /metrics.
    expect(page.locator("#store")).to_have_text("memory")
    expect(page.locator("#tracked")).not_to_have_text(DASH)

    # More events: the hour panel follows without a reload; the minute one is not redrawn.
    page.evaluate("window.sameDocument = true")
    renders = page.locator("#minute").get_attribute("data-renders")
    page.evaluate("document.querySelector('#minute .row').marked = true")
    post(server, {"timestamp": now - 3600, "h2.example": 10, "h3.example": 1})
    expect(page.locator("#hour .row .host")).to_have_text(
        ["h2.example", "h1.example", "h3.example"], timeout=WAIT
    )
    expect(page.locator("#hour .count")).to_have_text(["17", "10", "1"])
    bars_in_proportion(page, "hour", [17, 10, 1])
    expect(page.locator("#rate")).to_have_text(POSITIVE, timeout=WAIT)
    assert page.evaluate("window.sameDocument") is True
    assert page.locator("#minute").get_attribute("data-renders") == renders
    assert page.evaluate("document.querySelector('#minute .row').marked") is True
    assert not problems


def test_top_n_control_and_pause(server: Server, page: Page, problems: Problems) -> None:
    hold_still(3600, 30)
    ts = int(time.time()) - 3600
    post(server, {"timestamp": ts, **{f"host{i:02}.example": 100 - i for i in range(30)}})
    page.goto(server.url + "/")
    rows = page.locator("#hour .row")
    expect(rows).to_have_count(10, timeout=WAIT)
    page.select_option("#limit", "25")
    expect(rows).to_have_count(25, timeout=WAIT)
    page.select_option("#limit", "5")
    expect(rows).to_have_count(5, timeout=WAIT)
    expect(page.locator("#hour .row .host").first).to_have_text("host00.example")

    # Paused: no polling, so new events do not show until it resumes.
    page.click("#pause")
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#pause")).to_have_text("Resume")
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url))
    page.wait_for_timeout(100)  # a poll already on the wire may finish
    polls.clear()
    post(server, {"timestamp": ts, "zzz.example": 1000})
    page.wait_for_timeout(2_500)  # longer than one poll: proving an absence takes time
    assert [url for url in polls if "/stats" in url or "/metrics" in url] == []
    expect(page.locator("#hour .row .host").first).to_have_text("host00.example")
    page.click("#pause")
    expect(page.locator("#hour .row .host").first).to_have_text("zzz.example", timeout=WAIT)
    expect(page.locator("#pause")).to_have_text("Pause")
    assert not problems


def test_host_names_are_text_never_markup(server: Server, page: Page, problems: Problems) -> None:
    hold_still(3600, 30)
    evil = "<img src=x onerror=alert(1)>"
    script = "<script>alert(2)</script>"
    long = "a-very-long-host-name-that-cannot-fit." * 5 + "example.com"
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    post(server, {"timestamp": int(time.time()) - 3600, evil: 3, script: 2, long: 1})
    page.goto(server.url + "/")

    names = page.locator("#hour .row .host")
    expect(names).to_have_text([evil, script, long], timeout=WAIT)
    expect(names.first).to_have_attribute("title", evil)
    assert page.locator("main img, main script").count() == 0
    # A long name is cut with an ellipsis; the whole name is on hover.
    last = names.nth(2)
    expect(last).to_have_attribute("title", long)
    assert last.evaluate("e => getComputedStyle(e).textOverflow") == "ellipsis"
    assert last.evaluate("e => e.scrollWidth > e.clientWidth")
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []
    assert not problems


def test_empty_windows_then_a_banner_while_the_server_is_down_then_recovery(
    server: Server, page: Page
) -> None:
    page.goto(server.url + "/")
    for panel in ("#minute", "#hour"):
        expect(page.locator(f"{panel} .empty")).to_have_text(
            "No requests in this window yet", timeout=WAIT
        )
        expect(page.locator(f"{panel} .empty")).to_be_visible()
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()

    server.stop()
    expect(banner).to_be_visible(timeout=WAIT)
    expect(banner).to_contain_text("unreachable")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-offline.png")

    # A new server on the same port: the page finds it again by itself.
    hold_still(3600, 30)
    again = Server("--log-level", "warning", port=server.port)
    try:
        post(again, {"timestamp": int(time.time()) - 3600, "back.example": 1})
        expect(banner).to_be_hidden(timeout=WAIT)
        expect(page.locator("#hour .row .host")).to_have_text(["back.example"], timeout=WAIT)
    finally:
        again.stop()


def test_realistic_traffic_on_a_laptop_and_a_phone(
    browser: Browser, problems: Problems, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Also makes the screenshots: docs/dashboard.png is a copy of dashboard.png."""
    hold_still(60, 25)
    now = int(time.time())
    minute = now - now % 60 - 60  # the start of the past minute
    rnd = random.Random(6)
    names = [
        "api.example.com", "www.example.com", "cdn.example.net", "shop.example.org",
        "auth.example.com", "img.example.net", "static.example.com", "m.example.com",
        "eu-west-1.edge.loadbalancer.internal.example.com", "blog.example.io",
        "status.example.com", "docs.example.org",
    ]  # fmt: skip
    # The hour before: a day's rhythm, and a spike on the shop for ten minutes.
    history = []
    for k in range(1, 61):
        for i, host in enumerate(names):
            count = 900 / (i + 1.3) ** 1.1 * (1 + 0.45 * math.sin(k / (4 + i) + i))
            count *= 4 if host.startswith("shop") and 20 < k <= 30 else 1
            history.append({"timestamp": minute - 60 * k + rnd.randrange(60), host: int(count)})
    server = with_history(str(tmp_path / "snap"), history, "--log-level", "warning")
    request.addfinalizer(server.stop)
    post(
        server,
        *(
            {"timestamp": minute + rnd.randrange(60), h: int(4200 / (i + 1.4) ** 1.2)}
            for i, h in enumerate(names)
        ),
        *(
            {"timestamp": now - 3600, h: int(250_000 / (i + 1.8) ** 0.9) + rnd.randrange(900)}
            for i, h in enumerate(rnd.sample(names, len(names)))
        ),
    )
    context = browser.new_context(
        viewport={"width": 1280, "height": 720}, locale="en-US", timezone_id="Europe/Berlin"
    )
    page = context.new_page()
    page.on("console", problems.console)
    page.goto(server.url + "/")
    expect(page.locator("#minute .row")).to_have_count(10, timeout=WAIT)
    expect(page.locator("#hour .row")).to_have_count(10)
    expect(page.locator("#timeline .legend li")).to_have_count(5, timeout=WAIT)
    expect(page.locator("#timeline .minute-top li")).to_have_count(10)
    # Some live traffic, so the ingest rate is not zero.
    for _ in range(3):
        post(server, *({"timestamp": int(time.time()) - 3600, "www.example.com": 1},) * 40)
    expect(page.locator("#rate")).to_have_text(POSITIVE, timeout=WAIT)
    page.wait_for_timeout(700)  # let the bars finish their transition
    ARTIFACTS.mkdir(exist_ok=True)
    for name, width, height, scheme in (
        ("dashboard", 1280, 1000, "light"),
        ("dashboard-dark", 1280, 1000, "dark"),
        ("dashboard-phone", 390, 844, "light"),
    ):
        page.set_viewport_size({"width": width, "height": height})
        page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        # Nothing overflows sideways, on a phone either.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        left, right = (page.locator(f"#{w}").bounding_box() for w in ("minute", "hour"))
        assert left is not None
        assert right is not None
        side_by_side = left["y"] == right["y"] and left["x"] < right["x"]
        assert side_by_side == (width > 900), (width, left, right)
        page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=name.endswith("phone"))
    context.close()
    assert not problems


# -- the timeline: past hour, minute by minute -----------------------------------------

EVIL = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
TIMELINE_HOSTS = ["api.example.com", "www.example.com", EVIL, SCRIPT, "cdn.example.net"]


@pytest.fixture(scope="module")
def history_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose last 59 closed minutes hold 13 hosts each (12 where cdn.example.net
    is missing, and it is 11th where its count is 1), and whose past hour's top 5 are
    TIMELINE_HOSTS, two of them markup."""
    hold_still(60, 25)
    now = int(time.time())
    past = now - now % 60 - 60
    events: list[dict[str, Any]] = []
    for k in range(1, 60):
        start = past - 60 * k
        counts = {"api.example.com": 500 + 10 * k, "www.example.com": 300 + k % 7 * 20}
        counts |= {EVIL: 200 + k, SCRIPT: 150}
        if k % 10 != 0:
            counts["cdn.example.net"] = 1 if k % 10 == 5 else 100 + k
        counts |= {f"f{i:02}.example": 20 + i for i in range(8)}
        events.extend(
            {"timestamp": start + i, host: n} for i, (host, n) in enumerate(counts.items())
        )
    srv = with_history(str(tmp_path_factory.mktemp("history") / "snap"), events)
    hour = {"timestamp": int(time.time()) - 3600}
    post(srv, hour | {h: 10_000 - 1000 * i for i, h in enumerate(TIMELINE_HOSTS)})
    yield srv
    srv.stop()


def shown_range(page: Page) -> tuple[int, int]:
    page.wait_for_selector("#timeline .point", timeout=WAIT)
    section = page.locator("#timeline")
    return int(section.get_attribute("data-from") or 0), int(section.get_attribute("data-to") or 0)


def history_of(server: Server, since: int, until: int) -> list[dict[str, Any]]:
    params: dict[str, str | int] = {"stats_type": "minute", "from": since, "to": until}
    params["limit"] = 10
    response = httpx.get(server.url + "/stats/history", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["windows"])


def test_the_timeline_shows_what_stats_history_answers(
    history_server: Server, page: Page, problems: Problems
) -> None:
    hold_still(60, 15)
    page.goto(history_server.url + "/")
    since, until = shown_range(page)
    assert until == int(httpx.get(history_server.url + "/stats").headers["x-window-start"])
    assert until - since == 3600
    windows = history_of(history_server, since, until)
    assert len(windows) == 60
    # The past hour's top 5, in order, as text.
    expect(page.locator("#timeline .legend .name")).to_have_text(TIMELINE_HOSTS)
    # One point per (host, minute) where /stats/history lists the host, with its count,
    # at its height; none where it does not.
    points = page.evaluate(
        """() => [...document.querySelectorAll('#timeline circle.point')].map((c) => [
            c.dataset.host, Number(c.dataset.start), Number(c.dataset.count),
            Number(c.getAttribute('cy'))])"""
    )
    expected = {
        (host, w["start"], w["top_hosts"][host])
        for w in windows
        for host in TIMELINE_HOSTS
        if host in w["top_hosts"]
    }
    assert {(host, start, count) for host, start, count, _ in points} == expected
    assert len(points) == len(expected)
    gaps = [w["start"] for w in windows if "cdn.example.net" not in w["top_hosts"]]
    assert len(gaps) >= 10  # missing, or 11th: not in the minute's top 10
    top = max(count for _, _, count in expected)
    assert int(page.locator("#timeline").get_attribute("data-max") or 0) == top
    for host, start, count, cy in points:
        assert abs(cy - (172 - count / top * 158)) < 0.01, (host, start)
    # Each line joins the points of consecutive minutes only: a gap breaks it.
    lines = page.evaluate(
        """() => [...document.querySelectorAll('#timeline polyline')].map((l) =>
            l.getAttribute('points').split(' ').length)"""
    )
    runs: list[int] = []
    for host in TIMELINE_HOSTS:
        run = 0
        for w in [*windows, {"top_hosts": {}}]:
            if host in w["top_hosts"]:
                run += 1
            elif run:
                runs.append(run)
                run = 0
    assert sorted(lines) == sorted(r for r in runs if r > 1)
    assert not problems


def minute_list(page: Page) -> list[tuple[str, str]]:
    hosts = page.locator("#timeline .minute-top .host").all_text_contents()
    counts = page.locator("#timeline .minute-top .count").all_text_contents()
    return list(zip(hosts, counts, strict=True))


def test_selecting_a_minute_shows_its_top_10(
    history_server: Server, page: Page, problems: Problems
) -> None:
    hold_still(60, 15)
    page.goto(history_server.url + "/")
    since, until = shown_range(page)
    windows = history_of(history_server, since, until)

    def listed(w: dict[str, Any]) -> list[tuple[str, str]]:
        ranked = sorted(w["top_hosts"].items(), key=lambda kv: (-kv[1], kv[0]))
        return [(host, f"{count:,}") for host, count in ranked]

    # At first, the newest minute.
    section = page.locator("#timeline")
    expect(section).to_have_attribute("data-selected", str(windows[-1]["start"]))
    assert minute_list(page) == listed(windows[-1])
    # A click on a minute's column: one where cdn.example.net is not in the top 10.
    chosen = next(w for w in windows[1:] if "cdn.example.net" not in w["top_hosts"])
    page.locator(f'#timeline rect.hit[data-start="{chosen["start"]}"]').click()
    expect(section).to_have_attribute("data-selected", str(chosen["start"]))
    label = datetime.fromtimestamp(chosen["start"], UTC).strftime("%H:%M")
    expect(page.locator("#timeline .minute-title")).to_contain_text(f"Top 10 of {label}")
    assert minute_list(page) == listed(chosen)
    assert len(minute_list(page)) == 10
    assert "cdn.example.net" not in dict(minute_list(page))
    # The arrow keys move the selection a minute at a time.
    page.locator("#timeline svg").focus()
    page.keyboard.press("ArrowLeft")
    before = next(w for w in windows if w["start"] == chosen["start"] - 60)
    expect(section).to_have_attribute("data-selected", str(before["start"]))
    assert minute_list(page) == listed(before)
    page.keyboard.press("End")
    expect(section).to_have_attribute("data-selected", str(windows[-1]["start"]))
    assert not problems


def test_hostile_host_names_in_the_timeline_stay_text(
    history_server: Server, page: Page, problems: Problems
) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    hold_still(60, 15)
    page.goto(history_server.url + "/")
    shown_range(page)
    names = page.locator("#timeline .legend .name")
    expect(names.nth(2)).to_have_text(EVIL)
    expect(names.nth(2)).to_have_attribute("title", EVIL)
    expect(names.nth(3)).to_have_text(SCRIPT)
    hosts = page.locator("#timeline .minute-top .host")
    assert EVIL in hosts.all_text_contents()
    assert SCRIPT in hosts.all_text_contents()
    tips = page.locator("#timeline circle.point title").all_text_contents()
    assert any(tip.startswith(EVIL + ": ") for tip in tips)
    assert page.locator("main img, main script, #timeline svg foreignObject").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []
    assert not problems


# -- a server that wants a read token ---------------------------------------------------

TOKEN = "s3cret-read-token-2"
OLD_TOKEN = "old-read-token-0001"  # both are accepted, as while rotating tokens
REFUSED = "the server responded with a status of 401"  # Chromium logs each 401 fetch
DOWN = "net::ERR_CONNECTION_REFUSED"


@pytest.fixture
def guarded() -> Iterator[Server]:
    srv = Server("--log-level", "warning", "--read-token", f"{OLD_TOKEN},{TOKEN}")
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
    srv.stop()


def session_token(page: Page) -> str | None:
    return page.evaluate("sessionStorage.getItem('tophosts.readToken')")  # type: ignore[no-any-return]


def assert_token_kept_out(page: Page, token: str) -> None:
    """The token is in sessionStorage only: not in the URL, localStorage, cookies or DOM."""
    assert token not in page.url
    assert token not in page.evaluate("JSON.stringify(Object.entries(localStorage))")
    assert page.context.cookies() == []
    assert token not in page.content()
    assert token not in page.evaluate("document.body.innerText")
    assert page.locator("#token").input_value() == ""


def test_the_page_asks_for_the_read_token_once_per_browser_session(
    guarded: Server, browser: Browser, page: Page, problems: Problems
) -> None:
    hold_still(3600, 30)
    post(guarded, {"timestamp": int(time.time()) - 3600, "a.example": 3, "b.example": 2})
    assert httpx.get(guarded.url + "/stats").status_code == 401
    page.goto(guarded.url + "/")

    # Asked in a form, with the focus in its field; not the "unreachable" banner.
    signin, panels, field = page.locator("#signin"), page.locator(".panels"), page.locator("#token")
    expect(signin).to_be_visible(timeout=WAIT)
    expect(page.get_by_label("Read token", exact=True)).to_be_focused()
    expect(field).to_have_attribute("type", "password")
    expect(page.get_by_role("heading", name="Read token needed")).to_be_visible()
    expect(page.locator("#token-error")).to_be_hidden()
    expect(page.locator("#banner")).to_be_hidden()
    expect(panels).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Waiting for a read token")
    expect(page.locator("#forget")).to_be_hidden()

    # A wrong token is refused, forgotten, and asked for again.
    field.fill("wrong-token")
    field.press("Enter")
    error = page.get_by_role("alert").filter(has_text="not accepted")
    expect(error).to_be_visible(timeout=WAIT)
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_value("")
    expect(field).to_be_focused()
    expect(page.locator("#banner")).to_be_hidden()
    expect(panels).to_be_hidden()
    assert session_token(page) is None
    assert "wrong-token" not in page.url

    # The right one: the bars, with the right counts, and the token on every poll.
    polls: list[Request] = []
    page.on(
        "request", lambda r: polls.append(r) if "/stats" in r.url or "/metrics" in r.url else None
    )
    field.fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#hour .row .host")).to_have_text(["a.example", "b.example"], timeout=WAIT)
    expect(page.locator("#hour .count")).to_have_text(["3", "2"])
    bars_in_proportion(page, "hour", [3, 2])
    expect(page.locator("#store")).to_have_text("memory")
    expect(signin).to_be_hidden()
    expect(page.locator("#token-error")).to_be_hidden()
    expect(page.locator("#forget")).to_be_visible()
    assert session_token(page) == TOKEN
    assert_token_kept_out(page, TOKEN)

    # A reload keeps the token: no question, no 401.
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status))
    page.reload()
    expect(page.locator("#hour .count")).to_have_text(["3", "2"], timeout=WAIT)
    expect(page.locator("#status")).to_have_text(re.compile("^Updated"))
    expect(signin).to_be_hidden()
    assert statuses
    assert 401 not in statuses
    assert polls
    for request in polls:
        assert request.all_headers().get("authorization") == f"Bearer {TOKEN}", request.url
        assert TOKEN not in request.url
    assert_token_kept_out(page, TOKEN)

    # A fresh browser session asks again.
    context = browser.new_context()
    try:
        fresh = context.new_page()
        fresh.goto(guarded.url + "/")
        expect(fresh.locator("#signin")).to_be_visible(timeout=WAIT)
        expect(fresh.locator(".panels")).to_be_hidden()
        assert session_token(fresh) is None
    finally:
        context.close()

    # "Forget token" drops it and hides the figures at once.
    page.get_by_role("button", name="Forget token").click()
    expect(signin).to_be_visible()
    expect(page.locator("#token-message")).to_contain_text("forgotten")
    expect(panels).to_be_hidden()
    expect(page.locator("#hour .row")).to_have_count(0)
    expect(page.locator("#store")).to_have_text(DASH)
    assert session_token(page) is None
    page.wait_for_timeout(2_500)  # longer than a poll: the page must not poll without a token
    expect(signin).to_be_visible()
    expect(page.locator("#token-error")).to_be_hidden()
    assert [p for p in problems if REFUSED not in p] == []


def test_a_withdrawn_token_is_asked_for_again_and_an_outage_is_not_a_refusal(
    guarded: Server, page: Page, problems: Problems
) -> None:
    hold_still(3600, 30)
    post(guarded, {"timestamp": int(time.time()) - 3600, "a.example": 1})
    page.goto(guarded.url + "/")
    field = page.locator("#token")
    expect(field).to_be_visible(timeout=WAIT)
    field.fill(f"  {OLD_TOKEN} ")  # pasted with blanks around it
    field.press("Enter")
    expect(page.locator("#hour .row .host")).to_have_text(["a.example"], timeout=WAIT)
    assert session_token(page) == OLD_TOKEN

    # The server goes away: the banner says so; nobody asks for a token.
    guarded.stop()
    banner = page.locator("#banner")
    expect(banner).to_be_visible(timeout=WAIT)
    expect(banner).to_contain_text("unreachable")
    expect(page.locator("#signin")).to_be_hidden()
    assert session_token(page) == OLD_TOKEN

    # It comes back (empty) without the old token: the banner goes and the page asks again.
    again = Server("--log-level", "warning", "--read-token", TOKEN, port=guarded.port)
    try:
        post(again, {"timestamp": int(time.time()) - 3600, "b.example": 2})
        expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible(
            timeout=WAIT
        )
        expect(banner).to_be_hidden()
        expect(page.locator(".panels")).to_be_hidden()
        assert session_token(page) is None

        # The form fits a phone and follows the dark theme.
        page.set_viewport_size({"width": 390, "height": 844})
        page.emulate_media(color_scheme="dark")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        box = field.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 390
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 17, 21)"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "dashboard-token-phone-dark.png")

        # An empty submit is caught on the page.
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Enter the read token.")

        field.fill(TOKEN)
        field.press("Enter")
        expect(page.locator("#hour .row .host")).to_have_text(["b.example"], timeout=WAIT)
        expect(page.locator("#hour .count")).to_have_text(["2"])
        expect(banner).to_be_hidden()
    finally:
        again.stop()
    assert [p for p in problems if REFUSED not in p and DOWN not in p] == []
