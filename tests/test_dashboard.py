"""The dashboard page as served, in process: headers, assets, size and the rules its
script keeps. Its behaviour in a real browser is in ``test_dashboard_browser.py``."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tophosts.routes import DASHBOARD

ASSETS = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "icon.svg": "image/svg+xml",
}


def test_the_page_is_served_at_the_root_with_a_strict_csp(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "style-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/dashboard/assets/dashboard.js" defer></script>' in page.text
    assert '<link rel="stylesheet" href="/dashboard/assets/dashboard.css">' in page.text
    # Nothing inline that the CSP would have to allow.
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None
    assert "<style" not in page.text
    assert re.search(r"\sstyle=", page.text) is None
    assert re.search(r"\son[a-z]+=", page.text) is None
    assert "http://" not in page.text
    assert "https://" not in page.text


def test_every_asset_is_served_from_the_package(client: TestClient) -> None:
    for name, content_type in ASSETS.items():
        response = client.get(f"/dashboard/assets/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(content_type), name
        assert response.content == (DASHBOARD / name).read_bytes()


def test_the_page_stays_small() -> None:
    total = sum(path.stat().st_size for path in DASHBOARD.rglob("*") if path.is_file())
    assert total < 200 * 1024


def test_the_script_never_turns_text_into_markup_and_fetches_nothing_remote() -> None:
    script = (DASHBOARD / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert 'setAttribute("style"' not in script
    # The SVG namespace is a name, never fetched; no other address may appear.
    assert script.count('"http://www.w3.org/2000/svg"') == 1
    assert re.search(r"https?://", script.replace('"http://www.w3.org/2000/svg"', "")) is None
    for url in ("/stats?stats_type=", "/stats/history?stats_type=minute", "/metrics"):
        assert url in script
    # The timeline is an SVG built with DOM calls; nothing of it is parsed from text.
    assert "createElementNS(SVG" in script
    assert "DOMParser" not in script
    css = (DASHBOARD / "dashboard.css").read_text()
    assert "@import" not in css
    assert re.search(r"url\(", css) is None
    assert "prefers-color-scheme: dark" in css


def test_with_a_read_token_the_page_and_its_assets_stay_open(make_client: MakeClient) -> None:
    client = make_client(read_token="a-read-token-of-16+")
    assert client.get("/stats").status_code == 401
    assert client.get("/").status_code == 200
    for name in ASSETS:
        assert client.get(f"/dashboard/assets/{name}").status_code == 200, name


def test_the_token_form_cannot_leak_the_token() -> None:
    page = (DASHBOARD / "index.html").read_text()
    field = re.search(r"<input\b[^>]*>", page)
    assert field is not None
    # No name: even a submit the script missed would put nothing in a query string.
    assert re.search(r"\sname=", field.group()) is None
    assert 'type="password"' in field.group()
    assert 'for="token"' in page
    script = (DASHBOARD / "dashboard.js").read_text()
    assert "sessionStorage.setItem(TOKEN_KEY" in script
    # localStorage holds the top-N choice and nothing else.
    assert re.findall(r"localStorage\.\w+\(([^,)]*)", script) == ['"tophosts.limit"'] * 2
    assert "window.prompt" not in script
    assert "prompt(" not in script
