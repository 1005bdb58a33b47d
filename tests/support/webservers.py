"""Real web servers (nginx, HAProxy, Apache httpd, Caddy), an rsyslog relay and
logrotate, for the syslog and ``tophosts tail`` tests.

Each runs unprivileged-style: on free ports of 127.0.0.1, with its configuration,
pid file and logs in a temporary folder of its own, in the foreground; it is ready
once its port is bound (checked, never slept on), and :meth:`WebServer.stop`
always removes the folder. Its logging configuration is the README's snippet for
that server, with only the addresses' ports put in (:func:`snippet`), so the
README shows exactly what the tests run.

With the option ``tail=NAME`` a server logs to a file instead, :attr:`access_log`
in its folder, with the README's ``tophosts tail`` snippet NAME (only its log
path replaced), and :class:`Logrotate` rotates that file when a test says so:
its own configuration and state file in a temporary folder, forced (``-f``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
TOPHOSTS_PORT = "5514"
"""The port of tophosts' syslog listener in the README's snippets."""
RELAY_PORT = "514"
"""The port of the local rsyslog relay in the README's snippets."""
TAIL_LOGS = (
    "/var/log/nginx/access.log",
    "/var/log/apache2/access.log",
    "/var/log/caddy/access.log",
)
"""The access logs' paths in the README's ``tophosts tail`` snippets."""


def snippet(name: str, port: int, relay_port: int | None = None) -> str:
    """The fenced block that follows ``<!-- snippet: NAME -->`` in README.md, with the
    ports of its addresses replaced: tophosts' ``5514`` by ``port``, the relay's
    ``514`` by ``relay_port``. Nothing else is changed."""
    text = README.read_text()
    match = re.search(
        rf"<!-- snippet: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", text, flags=re.S
    )
    if match is None:
        raise LookupError(f"README.md has no snippet {name!r} (<!-- snippet: {name} -->)")
    body = re.sub(rf"(?<![0-9]){TOPHOSTS_PORT}(?![0-9])", str(port), match.group(1))
    if relay_port is not None:
        body = re.sub(rf"(?<![0-9]){RELAY_PORT}(?![0-9])", str(relay_port), body)
    return body


def binary(name: str) -> str:
    """The server's binary; without it, skip, or fail under CI=true."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed, and CI=true needs the syslog tests to run")
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return found


def _bound(port: int, kind: int) -> bool:
    """Whether something on this machine has ``127.0.0.1:port`` bound (TCP: listening)."""
    if kind == socket.SOCK_STREAM:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


class WebServer:
    """One server process; subclasses write its configuration."""

    name = ""
    binary = ""
    ready_kind = socket.SOCK_STREAM

    def __init__(self, syslog_port: int, **options: object) -> None:
        self.syslog_port = syslog_port
        self.options = options
        self.dir = Path(tempfile.mkdtemp(prefix=f"tophosts-{self.name}-"))
        # Servers that hand requests to an unprivileged user need to reach the folder.
        self.dir.chmod(0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (self.dir / "output.log").open("w+")
        self.access_log = self.dir / "access.log"
        """The access log, when the server logs to a file (``tail=NAME``)."""
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            command = self.configure(binary(self.binary))
            stdout = self.stdout()
            self.proc = subprocess.Popen(
                command,
                cwd=self.dir,
                env=self.environ(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=self.log if stdout is not self.log else subprocess.STDOUT,
                start_new_session=True,
            )
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def configure(self, program: str) -> list[str]:
        """Write the configuration into ``self.dir``; return the command line."""
        raise NotImplementedError

    def stdout(self) -> Any:
        """Where the server's standard output goes: its output log."""
        return self.log

    @property
    def tail(self) -> str:
        """The README's ``tophosts tail`` snippet this server logs to a file with, or ""."""
        return str(self.options.get("tail", ""))

    def logging(self, name: str, port: int) -> str:
        """The README's syslog snippet ``name`` with its ports put in; or, with ``tail``,
        that file snippet writing to :attr:`access_log`."""
        if not self.tail:
            return snippet(name, port)
        text = snippet(self.tail, port)
        for path in TAIL_LOGS:
            text = text.replace(path, str(self.access_log))
        return text

    def environ(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        return _bound(self.port, self.ready_kind)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready:\n{self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        self.log.flush()
        text = (self.dir / "output.log").read_text(errors="replace")
        for extra in sorted(self.dir.glob("*error*.log")):
            text += f"\n--- {extra.name}\n" + extra.read_text(errors="replace")
        return text

    def request(self, host: str, n: int, client: httpx.Client | None = None) -> None:
        """``n`` GET requests with ``Host: host``, each on a fresh connection (or all on
        ``client``'s)."""
        for _ in range(n):
            if client is None:
                httpx.get(self.url + "/", headers={"Host": host}, timeout=10)
            else:
                response = client.get(self.url + "/", headers={"Host": host})
                assert response.status_code == 200, response.text

    def reopen(self) -> None:
        """Make the server reopen its log file, as logrotate's ``postrotate`` does."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (and its children, such as Apache's logger) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc is not None:
            # The group may outlive its leader (a piped logger): end it too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_root() -> bool:
    return os.geteuid() == 0


class Nginx(WebServer):
    name = "nginx"
    binary = "nginx"

    def configure(self, program: str) -> list[str]:
        d = self.dir
        temp = "".join(
            f"  {kind}_temp_path {d}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        target = int(str(self.options.get("target", self.syslog_port)))
        (d / "nginx.conf").write_text(
            "daemon off;\n"
            + ("user root;\n" if _as_root() else "")
            + f"pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n{temp}"
            + self.logging("nginx", target)
            + f"  server {{ listen 127.0.0.1:{self.port}; return 200 'ok'; }}\n}}\n"
        )
        return [program, "-p", str(d), "-c", str(d / "nginx.conf")]

    @property
    def pid_file(self) -> Path:
        return self.dir / "nginx.pid"

    def reopen(self) -> None:
        os.kill(int(self.pid_file.read_text()), signal.SIGUSR1)


class HAProxy(WebServer):
    name = "haproxy"
    binary = "haproxy"

    def configure(self, program: str) -> list[str]:
        if self.tail:
            # The tail snippet is a whole configuration head, logging to stdout.
            (self.dir / "haproxy.cfg").write_text(
                self.logging("haproxy", self.syslog_port)
                + "    timeout client 10s\n"
                + f"    bind 127.0.0.1:{self.port}\n"
                + "    http-request return status 200 content-type text/plain string ok\n"
            )
            return [program, "-db", "-f", str(self.dir / "haproxy.cfg")]
        config = snippet("haproxy", self.syslog_port)
        if self.options.get("tcp"):
            tcp = snippet("haproxy-tcp", self.syslog_port).strip()
            config, n = re.subn(r"^ *log \S+ local0$", "    " + tcp, config, count=1, flags=re.M)
            assert n == 1, "the haproxy snippet has no 'log ... local0' line to replace"
        (self.dir / "haproxy.cfg").write_text(
            "defaults\n    mode http\n    option dontlognull\n"
            "    timeout client 10s\n    timeout server 10s\n    timeout connect 10s\n\n"
            + config
            + f"    bind 127.0.0.1:{self.port}\n"
            + "    http-request return status 200 content-type text/plain string ok\n"
        )
        return [program, "-db", "-f", str(self.dir / "haproxy.cfg")]

    def stdout(self) -> Any:
        # With ``log stdout``, HAProxy's standard output is the access log.
        return self.access_log.open("ab") if self.tail else self.log


class Apache(WebServer):
    name = "apache"
    binary = "apache2"

    hosts = ("a.example", "b.example", "c.example")
    """With ``tail``: the name-based virtual hosts served (``%v`` is a vhost's ServerName)."""

    def configure(self, program: str) -> list[str]:
        if not self.tail:
            binary("logger")  # the snippet pipes the log through util-linux's logger
        d = self.dir
        modules = "/usr/lib/apache2/modules"
        user = "User nobody\nGroup nogroup\n" if _as_root() else ""
        vhosts = ""
        if self.tail:
            (d / "index.html").write_text("ok\n")
            vhosts = f"LoadModule dir_module {modules}/mod_dir.so\nDirectoryIndex index.html\n"
            vhosts += "".join(
                f"<VirtualHost 127.0.0.1:{self.port}>\n  ServerName {name}\n</VirtualHost>\n"
                for name in self.hosts
            )
        (d / "httpd.conf").write_text(
            f"ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\n"
            f"ErrorLog {d}/error.log\nServerName localhost\n{user}"
            f"LoadModule mpm_event_module {modules}/mod_mpm_event.so\n"
            f"LoadModule authz_core_module {modules}/mod_authz_core.so\n"
            f"Listen 127.0.0.1:{self.port}\nDocumentRoot {d}\n"
            + self.logging("apache", self.syslog_port)
            + vhosts
        )
        return [program, "-f", str(d / "httpd.conf"), "-DFOREGROUND"]

    def environ(self) -> dict[str, str]:
        # Debian's apache2 reads its run directories from these when they are set.
        env = {k: v for k, v in os.environ.items() if not k.startswith("APACHE_")}
        return env


class Caddy(WebServer):
    name = "caddy"
    binary = "caddy"

    def configure(self, program: str) -> list[str]:
        (self.dir / "Caddyfile").write_text(
            "{\n\tadmin off\n\tauto_https off\n}\n"
            f"http://:{self.port} {{\n\tbind 127.0.0.1\n"
            + self.logging("caddy", self.syslog_port)
            + '\trespond "ok"\n}\n'
        )
        return [program, "run", "--config", str(self.dir / "Caddyfile"), "--adapter", "caddyfile"]

    def environ(self) -> dict[str, str]:
        # Caddy keeps its state under these; keep it in the folder.
        d = str(self.dir)
        return {**os.environ, "HOME": d, "XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d}


class Rsyslog(WebServer):
    """A local rsyslog relay: syslog over UDP in, forwarded to tophosts over TCP."""

    name = "rsyslog"
    binary = "rsyslogd"
    ready_kind = socket.SOCK_DGRAM

    def configure(self, program: str) -> list[str]:
        d = self.dir
        (d / "rsyslog.conf").write_text(
            f'global(workDirectory="{d}")\n' + snippet("rsyslog", self.syslog_port, self.port)
        )
        return [program, "-n", "-f", str(d / "rsyslog.conf"), "-i", str(d / "rsyslog.pid")]

    def request(  # pragma: no cover - not a web server
        self, host: str, n: int, client: httpx.Client | None = None
    ) -> None:
        raise TypeError("rsyslog relays syslog; send requests to a web server")


def syslog_figures(url: str) -> dict[tuple[str, str, str], float]:
    """``{(metric, transport, label): value}`` of a tophosts server's syslog metrics, where
    ``label`` is the result, the reason, or ``""`` for a metric without one."""
    found: dict[tuple[str, str, str], float] = {}
    text = httpx.get(url + "/metrics", timeout=10).text
    pattern = r'^tophosts_syslog_(\w+)\{listener="(udp|tcp)://[^"]+"(?:,\w+="(\w+)")?\} (\S+)$'
    for name, transport, label, value in re.findall(pattern, text, flags=re.M):
        key = (name, transport, label)
        found[key] = found.get(key, 0.0) + float(value)
    return found


class Logrotate:
    """logrotate with its own configuration and state file in a temporary folder."""

    def __init__(self, log: Path, options: str) -> None:
        self.program = binary("logrotate")
        self.dir = Path(tempfile.mkdtemp(prefix="tophosts-logrotate-"))
        self.config = self.dir / "logrotate.conf"
        self.state = self.dir / "logrotate.state"
        self.config.write_text(f"{log} {{\n{options}\n}}\n")
        self.config.chmod(0o644)

    def rotate(self) -> None:
        """One forced rotation, now."""
        done = subprocess.run(
            [self.program, "-f", "-s", str(self.state), str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"logrotate failed ({done.returncode}): {done.stderr}")

    def stop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
