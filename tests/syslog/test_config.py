"""The syslog settings: flags, variables, and what a bad value says."""

from __future__ import annotations

import pytest

from tophosts.config import Settings, SettingsError, load, resolve


def test_syslog_listeners_repeat_as_flags_and_comma_separate_as_a_variable() -> None:
    settings = load(
        ["--syslog", "udp://127.0.0.1:5514", "--syslog", "TCP://[::1]:5514,udp://127.0.0.1:5514"],
        {},
    )
    assert settings.syslog == "udp://127.0.0.1:5514,tcp://[::1]:5514"
    from_env = load([], {"TOPHOSTS_SYSLOG": " udp://0.0.0.0:514 , tcp://localhost:6514"})
    assert from_env.syslog == "udp://0.0.0.0:514,tcp://localhost:6514"
    # A flag wins over the variable.
    both = load(["--syslog", "tcp://127.0.0.1:1"], {"TOPHOSTS_SYSLOG": "udp://127.0.0.1:2"})
    assert both.syslog == "tcp://127.0.0.1:1"


@pytest.mark.parametrize(
    "value",
    ["syslog://127.0.0.1:514", "udp://127.0.0.1", "udp://127.0.0.1:0", "udp://127.0.0.1:70000",
     "udp://[zz]:514", "tcp:/x:1", "", ","],
)  # fmt: skip
def test_a_bad_listener_says_what_is_accepted(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(["--syslog", value], {})
    message = str(caught.value)
    assert message.startswith("--syslog: expected udp://HOST:PORT or tcp://HOST:PORT")
    assert repr(value) in message


def test_the_other_syslog_settings() -> None:
    defaults = Settings()
    assert (defaults.syslog, defaults.syslog_format) == ("", "auto")
    assert defaults.syslog_rcvbuf == 8 * 1024 * 1024
    assert defaults.syslog_idle_timeout == 600
    settings = load(
        ["--syslog-format", "Caddy", "--syslog-rcvbuf", "256KiB", "--syslog-idle-timeout", "30"],
        {},
    )
    assert (settings.syslog_format, settings.syslog_rcvbuf) == ("caddy", 256 * 1024)
    assert settings.syslog_idle_timeout == 30
    with pytest.raises(SettingsError, match="--syslog-format: expected one of auto, text, nginx"):
        load(["--syslog-format", "json"], {})
    with pytest.raises(SettingsError, match="TOPHOSTS_SYSLOG_RCVBUF: expected a size"):
        load([], {"TOPHOSTS_SYSLOG_RCVBUF": "lots"})


def test_workers_get_the_syslog_settings_through_the_environment() -> None:
    listeners = ["--syslog", "udp://127.0.0.1:5514", "--syslog", "tcp://127.0.0.1:5514"]
    others = ["--syslog-rcvbuf", "1MiB", "--syslog-idle-timeout", "2.5", "--store", "redis://x:1/0"]
    settings = load([*listeners, *others], {})
    assert resolve(None, settings.environ()) == settings
