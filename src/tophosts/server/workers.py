"""``--workers N``: N uvicorn server processes, each with its own listening socket.

uvicorn's own ``workers=N`` hands one listening socket to every worker, and the
worker that wakes first accepts every connection that is waiting. A client that
opens its connections in a burst (a load balancer's pool, a load generator)
can so end up entirely on one worker while the others idle. Here each worker
listens on its own socket bound with ``SO_REUSEPORT`` to the same address, and
the kernel spreads new connections evenly across them.

The supervisor is deliberately small: start the workers, restart one that
dies after it started serving, stop them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from multiprocessing.context import SpawnProcess
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

log = logging.getLogger("tophosts")


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket that other ``SO_REUSEPORT`` sockets may share the address of."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _worker(config: uvicorn.Config, sock: socket.socket) -> None:
    """A worker process: one uvicorn server on its own socket."""
    config.configure_logging()
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def serve(config: uvicorn.Config, workers: int) -> int:
    """Run ``workers`` processes serving ``config`` (an import string and factory) until
    SIGTERM or SIGINT. Return once they have all shut down: 0, or ``STARTUP_FAILURE``
    when a worker could not start."""
    first = listen(config.host, config.port, config.backlog)
    port = first.getsockname()[1]  # the port picked, when config.port is 0
    sockets = [first] + [listen(config.host, port, config.backlog) for _ in range(workers - 1)]
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)

    def start(sock: socket.socket) -> SpawnProcess:
        process = spawn.Process(target=_worker, args=(config, sock), daemon=False)
        process.start()
        return process

    processes = [start(sock) for sock in sockets]
    log.info(
        "%d workers on http://%s:%d, pids %s",
        workers,
        config.host,
        port,
        " ".join(str(p.pid) for p in processes),
    )
    status = 0
    while not stop.wait(0.5):
        for i, process in enumerate(processes):
            if process.is_alive():
                continue
            if process.exitcode == STARTUP_FAILURE:
                log.error("worker %d failed to start; stopping", process.pid)
                status = STARTUP_FAILURE
                stop.set()
                break
            log.warning("worker %d exited with %s; starting another", process.pid, process.exitcode)
            processes[i] = start(sockets[i])
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join()
    for sock in sockets:
        sock.close()
    return status
