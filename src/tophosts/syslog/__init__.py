"""The syslog receiver: web servers' access-log lines over UDP or TCP, counted as requests.

Modules, one idea each:

* :mod:`~tophosts.syslog.address`: ``udp://HOST:PORT`` and ``tcp://HOST:PORT``;
* :mod:`~tophosts.syslog.framing`: a TCP byte stream into frames (sans-io);
* :mod:`~tophosts.syslog.header`: the RFC 3164 / RFC 5424 header, into tag and body;
* :mod:`~tophosts.syslog.lines`: a line into ``(second, host)``, through
  :mod:`tophosts.formats`;
* :mod:`~tophosts.syslog.udp`, :mod:`~tophosts.syslog.tcp`: the asyncio protocols;
* :mod:`~tophosts.syslog.sockets`: binding, ``SO_REUSEPORT``, the receive buffer;
* :mod:`~tophosts.syslog.aggregate`: the per-(second, host) tables and their flusher;
* :mod:`~tophosts.syslog.counts`, :mod:`~tophosts.syslog.drops`,
  :mod:`~tophosts.syslog.metrics`: what was received, kernel drops, the collector;
* :mod:`~tophosts.syslog.receiver`: all of it started and stopped together.

Nothing is imported here, so that the settings can check a listener URL
(:mod:`~tophosts.syslog.address`) without loading the receiver.
"""
