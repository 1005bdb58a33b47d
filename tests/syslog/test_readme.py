"""The README's server snippets and the launchers that run them stay one set."""

from __future__ import annotations

import re

import pytest

from tests.support.webservers import README, snippet

USED = {"nginx", "haproxy", "haproxy-tcp", "apache", "caddy", "rsyslog"} | {
    "tail-nginx-vhost",
    "tail-nginx-tophosts",
    "tail-apache",
    "tail-haproxy",
    "tail-caddy",
}
"""The snippets that tests/support/webservers.py reads (the syslog ones, then the
``tophosts tail`` ones, tests/tail/test_servers.py)."""


def test_every_snippet_in_the_readme_is_run_by_a_test() -> None:
    markers = set(re.findall(r"<!-- snippet: ([\w-]+) -->\n```", README.read_text()))
    assert markers == USED


def test_only_the_ports_change() -> None:
    text = snippet("rsyslog", 40001, 40002)
    assert 'port="40002"' in text
    assert 'port="40001"' in text
    assert "5514" not in text
    assert "514" not in text.replace("40001", "").replace("40002", "")
    assert snippet("nginx", 40001) == (
        "log_format tophosts '$msec $host';\n"
        "access_log syslog:server=127.0.0.1:40001,tag=tophosts tophosts;\n"
    )
    with pytest.raises(LookupError, match="no snippet 'lighttpd'"):
        snippet("lighttpd", 1)
