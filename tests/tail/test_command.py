"""``tophosts tail`` as a command: start-up errors are one line, and the help names every flag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ingest_double import IngestDouble
from tophosts import cli
from tophosts.tail.settings import SPECS

pytestmark = pytest.mark.e2e


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tophosts", "tail", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_missing_format_is_one_line() -> None:
    proc = run("/var/log/nginx/access.log")
    assert proc.returncode == 2
    assert proc.stderr.startswith("tophosts tail: --format (or TOPHOSTS_TAIL_FORMAT) is required")
    assert proc.stderr.count("\n") == 1


def test_a_state_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    proc = run(str(tmp_path / "a.log"), "--format", "tophosts", "--state", str(tmp_path / "no/s"))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert "give --state a path in a directory this user can write" in errors[0]


def test_a_wrong_token_stops_the_process_with_one_line(tmp_path: Path) -> None:
    double = IngestDouble(token="right-token-0123456789")
    log = tmp_path / "a.log"
    log.write_text("1700000000.1 a.com\n")
    token = tmp_path / "token"
    token.write_text("wrong-token-0123456789\n")
    try:
        proc = run(
            *(str(log), "--format", "tophosts", "--state", str(tmp_path / "state")),
            *("--url", double.url, "--from-start", "--ingest-token-file", str(token)),
        )
    finally:
        double.stop()
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert "refused the ingest token (401" in errors[0]
    assert "wrong-token" not in proc.stderr


def test_the_help_names_every_flag_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["tail", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for spec in SPECS:
        assert "--" + spec.name.replace("_", "-") in text
        assert "TOPHOSTS_TAIL_" + spec.name.upper() in text
