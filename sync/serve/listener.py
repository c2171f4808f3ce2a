"""The daemon's HTTP listener: uvicorn serving an ASGI app on its own thread and event loop,
so a slow request never waits on a cycle and a cycle never waits on a request. The socket is
bound before the thread starts (a port in use fails at once, in the caller; port 0 picks a free
one: :attr:`Listener.port`). :meth:`Listener.stop` ends it within a few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn

log = structlog.get_logger("contactsync.http")


class _Server(uvicorn.Server):
    # The daemon owns SIGTERM/SIGINT: uvicorn must not install its own handlers (it could not
    # off the main thread anyway).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Listener:
    """``Listener(app, host, port).start()`` … ``.stop()``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8780) -> None:
        self.app = app
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio then disables Nagle on accepted connections (see
        # connectors/loopback.py).
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.listen(128)
        self._sock.set_inheritable(False)
        self.port: int = self._sock.getsockname()[1]
        self._server = _Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=2)
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Listener:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), name="http-listener", daemon=True
        )
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the HTTP listener on {self.url} did not start")
            if waited > timeout:
                raise RuntimeError(f"the HTTP listener on {self.url} did not start within {timeout} s")
            threading.Event().wait(0.01)
            waited += 0.01
        log.info("http_listening", url=self.url)
        return self

    def stop(self, timeout: float = 4.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(1.0)
        self._sock.close()
        log.info("http_stopped", url=self.url)

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
