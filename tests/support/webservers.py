"""Real web servers writing real access logs (nginx, Apache httpd, HAProxy, Caddy), and
logrotate, for the ``tophosts tail`` tests.

Each server runs in the foreground on a free port of 127.0.0.1 with its
configuration, pid file and logs in a temporary folder of its own; it is ready
once its port accepts connections (checked, never slept on), and
:meth:`WebServer.stop` always removes the folder. Its logging configuration is
the README's snippet for that format (the fenced block after
``<!-- snippet: NAME -->``) with only the README's log path replaced by the
folder's, so the README shows exactly what the tests run.

logrotate runs unprivileged-style too: its own configuration and state file in
a temporary folder, forced (``-f``), so that a test rotates when it chooses.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
LOGS = ("/var/log/nginx/access.log", "/var/log/apache2/access.log", "/var/log/caddy/access.log")
"""The access logs' paths in the README's snippets."""


def snippet(name: str) -> str:
    """The fenced block that follows ``<!-- snippet: NAME -->`` in README.md."""
    match = re.search(
        rf"<!-- snippet: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", README.read_text(), re.S
    )
    if match is None:
        raise LookupError(f"README.md has no snippet {name!r} (<!-- snippet: {name} -->)")
    return match.group(1)


def binary(name: str) -> str:
    """The program's path; without it, skip, or fail under CI=true."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed, and CI=true needs the tail tests to run")
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return found


def _as_root() -> bool:
    return os.geteuid() == 0


class WebServer:
    """One server process writing ``self.access_log``; subclasses write its configuration."""

    name = ""
    program = ""

    def __init__(self, snippet_name: str) -> None:
        self.snippet_name = snippet_name
        self.dir = Path(tempfile.mkdtemp(prefix=f"tophosts-tail-{self.name}-"))
        # Servers that hand requests to an unprivileged user need to reach the folder.
        self.dir.chmod(0o755)
        self.access_log = self.dir / "access.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_file = (self.dir / "output.log").open("w+")
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            command = self.configure(binary(self.program))
            self.proc = self.launch(command)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def logging(self) -> str:
        """The README's snippet, writing to this server's access log."""
        text = snippet(self.snippet_name)
        for path in LOGS:
            text = text.replace(path, str(self.access_log))
        return text

    def configure(self, program: str) -> list[str]:
        raise NotImplementedError

    def launch(self, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            cwd=self.dir,
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            stdout=self.output_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def environ(self) -> dict[str, str]:
        return dict(os.environ)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready:\n{self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        self.output_file.flush()
        text = (self.dir / "output.log").read_text(errors="replace")
        for extra in sorted(self.dir.glob("*error*.log")):
            text += f"\n--- {extra.name}\n" + extra.read_text(errors="replace")
        return text

    def request(self, host: str, n: int, client: httpx.Client | None = None) -> None:
        """``n`` GET requests with ``Host: host`` (on one keep-alive connection)."""
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(httpx.Client(timeout=10))
            for _ in range(n):
                response = client.get(self.url + "/", headers={"Host": host})
                assert response.status_code == 200, response.text

    def reopen(self) -> None:
        """Make the server reopen its log file (after a rename), as logrotate's postrotate does."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.output_file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Nginx(WebServer):
    name = "nginx"
    program = "nginx"

    def configure(self, program: str) -> list[str]:
        d = self.dir
        temp = "".join(
            f"  {kind}_temp_path {d}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (d / "nginx.conf").write_text(
            "daemon off;\n"
            + ("user root;\n" if _as_root() else "")
            + f"pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n{temp}"
            + self.logging()
            + f"  server {{ listen 127.0.0.1:{self.port}; return 200 'ok'; }}\n}}\n"
        )
        return [program, "-p", str(d), "-c", str(d / "nginx.conf")]

    @property
    def pid_file(self) -> Path:
        return self.dir / "nginx.pid"

    def reopen(self) -> None:
        os.kill(int(self.pid_file.read_text()), signal.SIGUSR1)


class Apache(WebServer):
    name = "apache"
    program = "apache2"
    hosts = ("a.example", "b.example", "c.example")

    def configure(self, program: str) -> list[str]:
        d = self.dir
        modules = "/usr/lib/apache2/modules"
        user = "User nobody\nGroup nogroup\n" if _as_root() else ""
        (d / "httpd.conf").write_text(
            f"ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\n"
            f"ErrorLog {d}/error.log\nServerName localhost\n{user}"
            f"LoadModule mpm_event_module {modules}/mod_mpm_event.so\n"
            f"LoadModule authz_core_module {modules}/mod_authz_core.so\n"
            f"LoadModule dir_module {modules}/mod_dir.so\nDirectoryIndex index.html\n"
            f"Listen 127.0.0.1:{self.port}\nDocumentRoot {d}\n"
            + self.logging()
            # %v is the virtual host's ServerName: one name-based host per name served.
            + "".join(
                f"<VirtualHost 127.0.0.1:{self.port}>\n  ServerName {name}\n</VirtualHost>\n"
                for name in self.hosts
            )
        )
        (d / "index.html").write_text("ok\n")
        return [program, "-f", str(d / "httpd.conf"), "-DFOREGROUND"]

    def environ(self) -> dict[str, str]:
        # Debian's apache2 reads its run directories from these when they are set.
        return {k: v for k, v in os.environ.items() if not k.startswith("APACHE_")}


class HAProxy(WebServer):
    """HAProxy logs through syslog; here to its standard output, which is the access log."""

    name = "haproxy"
    program = "haproxy"

    def configure(self, program: str) -> list[str]:
        (self.dir / "haproxy.cfg").write_text(
            self.logging()
            + "    timeout client 10s\n    timeout server 10s\n    timeout connect 10s\n"
            + f"    bind 127.0.0.1:{self.port}\n"
            + "    http-request return status 200 content-type text/plain string ok\n"
        )
        return [program, "-db", "-f", str(self.dir / "haproxy.cfg")]

    def launch(self, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self.access_log.open("ab"),
            stderr=self.output_file,
            start_new_session=True,
        )

    def logging(self) -> str:
        return snippet(self.snippet_name)


class Caddy(WebServer):
    name = "caddy"
    program = "caddy"

    def configure(self, program: str) -> list[str]:
        (self.dir / "Caddyfile").write_text(
            "{\n\tadmin off\n\tauto_https off\n}\n"
            f"http://:{self.port} {{\n\tbind 127.0.0.1\n" + self.logging() + '\trespond "ok"\n}\n'
        )
        return [program, "run", "--config", str(self.dir / "Caddyfile"), "--adapter", "caddyfile"]

    def environ(self) -> dict[str, str]:
        # Caddy keeps its state under these; keep it in the folder.
        d = str(self.dir)
        return {**os.environ, "HOME": d, "XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d}


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
