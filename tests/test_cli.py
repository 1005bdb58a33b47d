"""The command line: ``tophosts serve|load|bench``, its start-up errors and its help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port
from tophosts import __version__, cli, config

README = Path(__file__).parent.parent / "README.md"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tophosts", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.e2e
def test_a_bad_setting_stops_start_up_with_one_line() -> None:
    proc = run("serve", "--port", str(free_port()), "--top", "zero")
    assert proc.returncode == 2
    assert proc.stderr == "tophosts: --top: expected an integer from 1 to 1000, got 'zero'\n"


@pytest.mark.e2e
def test_a_bad_variable_is_named_too() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tophosts", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env={"TOPHOSTS_MAX_SKEW": "-1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tophosts: TOPHOSTS_MAX_SKEW: expected an integer from 0 to")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"tophosts {__version__}\n"


def test_every_setting_has_a_flag_a_variable_and_a_readme_row(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    help_text = capsys.readouterr().out
    readme = README.read_text()
    for spec in config.SPECS:
        flag, var = config.flag(spec.name), config.ENV_PREFIX + spec.name.upper()
        assert flag in help_text
        assert f"env {var}" in " ".join(help_text.split())
        assert re.search(rf"^\| `{flag}` \| `{var}` \|", readme, re.M), flag
