"""Test support: servers, proxies and clocks shared by tests, bench and drills."""
