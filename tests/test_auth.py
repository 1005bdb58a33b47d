from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import MakeClient
from tests.support.clock import T0
from tophosts.config import Settings, SettingsError, load
from tophosts.server import exposure_warning
from tophosts.windows import Window, past

PAST_MINUTE = past(T0, Window.MINUTE).start
INGEST = "ingest-token-0123456789"
ROTATED = "ingest-token-abcdefghij"
READ = "read-token-0123456789abc"
EVENT = {"timestamp": PAST_MINUTE, "a.com": 1}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="tophosts"'
    assert "Authorization: Bearer" in response.json()["error"]


@pytest.fixture
def guarded(make_client: MakeClient) -> TestClient:
    return make_client(ingest_token=f"{INGEST},{ROTATED}", read_token=READ)


def test_without_tokens_everything_is_open(client: TestClient) -> None:
    assert client.post("/counter", json=EVENT).status_code == 200
    assert client.get("/stats").status_code == 200


def test_ingest_requires_one_of_the_ingest_tokens(guarded: TestClient) -> None:
    assert_401(guarded.post("/counter", json=EVENT))
    assert_401(guarded.post("/counters", json=[EVENT]))
    assert_401(guarded.post("/counter", json=EVENT, headers=bearer("wrong-token-0123456789")))
    assert_401(guarded.post("/counter", json=EVENT, headers={"authorization": f"Basic {INGEST}"}))
    assert_401(guarded.post("/counter", json=EVENT, headers=bearer(READ)))
    assert guarded.post("/counter", json=EVENT, headers=bearer(INGEST)).json() == {"status": "ok"}
    assert guarded.post("/counters", json=[EVENT], headers=bearer(ROTATED)).status_code == 200
    stats = guarded.get("/stats", headers=bearer(READ)).json()
    assert stats == {"top_hosts": {"a.com": 2}}


def test_reading_requires_the_read_token(guarded: TestClient) -> None:
    assert_401(guarded.get("/stats"))
    assert_401(guarded.get("/metrics"))
    assert_401(guarded.get("/stats", headers=bearer(INGEST)))
    assert guarded.get("/stats", headers=bearer(READ)).status_code == 200
    assert guarded.get("/metrics", headers=bearer(READ)).status_code == 200
    for open_path in ("/healthz", "/openapi.json", "/docs"):
        assert guarded.get(open_path).status_code == 200


def test_refused_requests_change_nothing_and_are_counted(guarded: TestClient) -> None:
    guarded.post("/counter", json=EVENT)
    assert guarded.get("/stats", headers=bearer(READ)).json() == {"top_hosts": {}}
    metrics = guarded.get("/metrics", headers=bearer(READ)).text
    assert 'tophosts_http_requests_total{route="/counter",status="401"} 1.0' in metrics


def test_tokens_never_reach_the_logs(guarded: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        guarded.post("/counter", json=EVENT, headers=bearer(INGEST))
        guarded.post("/counter", json=EVENT, headers=bearer("wrong-token-0123456789"))
        guarded.get("/stats", headers=bearer(READ))
    assert "POST /counter 401" in caplog.text
    for secret in (INGEST, READ, "wrong-token"):
        assert secret not in caplog.text


def test_token_settings(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"{INGEST}\n{ROTATED}\n")
    assert load(["--ingest-token-file", str(file)], {}).ingest_token == f"{INGEST},{ROTATED}"
    assert load([], {"TOPHOSTS_READ_TOKEN": f" {READ} "}).read_token == READ
    with pytest.raises(SettingsError) as info:
        load(["--ingest-token", "short"], {})
    assert "at least 16" in str(info.value)
    assert "short" not in str(info.value)
    with pytest.raises(SettingsError, match="--read-token-file: expected a readable file"):
        load(["--read-token-file", str(tmp_path / "missing")], {})
    assert INGEST not in repr(load(["--ingest-token", INGEST], {}))


def test_a_warning_when_exposed_without_tokens() -> None:
    assert exposure_warning(Settings(host="127.0.0.1")) is None
    assert exposure_warning(Settings(host="localhost")) is None
    assert exposure_warning(Settings(host="0.0.0.0", ingest_token=INGEST, read_token=READ)) is None
    warning = exposure_warning(Settings(host="0.0.0.0", ingest_token=INGEST))
    assert warning is not None
    assert "no token for stats" in warning
    assert "no token for ingest or stats" in str(exposure_warning(Settings(host="::")))


def test_a_token_flag_beats_every_variable_file_forms_included(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(READ + "\n")
    for kind in ("ingest", "read"):
        flag, var = f"--{kind}-token", f"TOPHOSTS_{kind.upper()}_TOKEN"
        environ = {var: ROTATED, var + "_FILE": str(file)}
        assert getattr(load([flag, INGEST], environ), f"{kind}_token") == INGEST
        assert getattr(load([flag + "-file", str(file)], {var: INGEST}), f"{kind}_token") == READ
        with pytest.raises(SettingsError, match=f"{var} and {var}_FILE both set"):
            load([], environ)
        with pytest.raises(SettingsError, match=f"{flag} and {flag}-file both set"):
            load([flag, INGEST, flag + "-file", str(file)], {})
