"""tophosts tail's settings: a flag and a TOPHOSTS_TAIL_* variable each, bad values named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tophosts.tail.settings import (
    SPECS,
    SettingsError,
    TailSettings,
    add_arguments,
    resolve,
    variable,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def load(argv: list[str], environ: dict[str, str] | None = None) -> TailSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return resolve(parser.parse_args(argv), environ or {})


def test_defaults() -> None:
    s = load(["/var/log/a.log", "--format", "nginx-vhost"])
    assert s == TailSettings(paths=("/var/log/a.log",), format="nginx-vhost")
    assert (s.interval, s.max_batch, s.url) == (1.0, 10_000, "http://127.0.0.1:8080")


def test_flags_win_over_variables(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token-0123456789\nsecond-token-0123456789\n")
    env = {
        "TOPHOSTS_TAIL_FORMAT": "caddy-json",
        "TOPHOSTS_TAIL_INTERVAL": "0.25",
        "TOPHOSTS_TAIL_URL": "http://tophosts:8080/",
        "TOPHOSTS_TAIL_FROM_START": "yes",
        "TOPHOSTS_TAIL_INGEST_TOKEN_FILE": str(token),
    }
    s = load(["a.log", "--interval", "2"], env)
    assert (s.format, s.interval, s.url, s.from_start) == (
        "caddy-json",
        2.0,
        "http://tophosts:8080",
        True,
    )
    assert s.ingest_token == "first-token-0123456789"
    assert "first-token" not in repr(s)


TP = ["a.log", "--format", "tophosts"]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["a.log"], {}, "--format (or TOPHOSTS_TAIL_FORMAT) is required: one of nginx-vhost,"),
        (["a.log", "--format", "apache"], {}, "--format: expected one of nginx-vhost, combined"),
        ([*TP, "--interval", "0"], {}, "--interval: expected a number of seconds from 0.01"),
        (TP, {"TOPHOSTS_TAIL_URL": "tophosts:8080"}, "TOPHOSTS_TAIL_URL: expected a tophosts"),
        ([*TP, "--ingest-token-file", "/nonexistent"], {}, "--ingest-token-file: expected a"),
        ([*TP, "--max-batch", "0"], {}, "--max-batch: expected an integer from 1 to 100000"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as error:
        load(argv, env)
    assert str(error.value).startswith(message)


def test_every_setting_has_a_variable_and_a_readme_row() -> None:
    readme = README.read_text()
    for spec in SPECS:
        flag = "--" + spec.name.replace("_", "-")
        assert f"| `{flag}" in readme, flag
        assert f"`{variable(spec)}`" in readme, variable(spec)
