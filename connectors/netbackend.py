"""A plain-asyncio network backend for httpcore (the transport under httpx).

httpcore's default backend on asyncio goes through anyio, whose socket stream builds its whole
attribute table - including a ``getpeername()`` system call - every time httpcore asks an idle
pooled connection whether the server closed it (``is_readable``), which it does for every
connection of the pool on every request; and each read registers and unregisters the socket
with epoll. Profiled under ``bench/cycle.py`` that was the largest share of the engine's CPU per
write. This backend keeps each connection as an asyncio stream (the transport stays registered
for reading, so an early close by the server is noticed by the event loop) and answers
``is_readable`` from the stream's buffer and EOF flag, without a system call.

Errors are httpcore's own (ConnectError, ReadTimeout, ...), so httpx maps them to the same
exceptions as with its default backend and the shared error policy is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore

_SocketOption = tuple[int, int, Any] | tuple[int, int, None, int]


@contextlib.contextmanager
def _mapped(timeout_exc: type[Exception], error_exc: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:  # asyncio.timeout raises the builtin TimeoutError (3.11+)
        raise timeout_exc(str(exc) or "timed out") from exc
    except (OSError, ssl.SSLError, EOFError, asyncio.IncompleteReadError) as exc:
        raise error_exc(str(exc) or type(exc).__name__) from exc


def _deadline(timeout: float | None) -> contextlib.AbstractAsyncContextManager[Any]:
    # No timer at all when none is asked for (the shared client also bounds every call).
    return asyncio.timeout(timeout) if timeout is not None else contextlib.nullcontext()


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS) connection as an asyncio stream pair."""

    #: Writes are held back until this many bytes are pending (or a read begins).
    HOLD_BYTES = 64 * 1024

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._pending_timeout: float | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            await self._flush(self._pending_timeout)
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            async with _deadline(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Queue ``buffer``; it is sent with the rest of the request when the response is read.
        httpcore writes a request's head and body separately: sent as they come, that is two
        system calls and two wake-ups of the server per request; held back, one."""
        if not buffer:
            return
        self._pending.append(buffer)
        self._pending_bytes += len(buffer)
        self._pending_timeout = timeout
        if self._pending_bytes >= self.HOLD_BYTES:
            await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            if self._writer.is_closing():
                raise OSError("connection closed")
            self._writer.write(data)
            # drain() returns at once unless the transport's buffer is past its high-water mark.
            async with _deadline(timeout):
                await self._writer.drain()

    async def aclose(self) -> None:
        self._pending.clear()
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
            # Do not wait for a peer that does not answer the close: the socket is gone either way.
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            await self._writer.start_tls(ssl_context, server_hostname=server_hostname, ssl_handshake_timeout=timeout)
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks this of an idle keep-alive connection: readable means the server sent
            # something unexpected or closed it, so the connection must not be reused.
            return self._reader.at_eof() or bool(self._reader._buffer) or self._writer.is_closing()  # type: ignore[attr-defined]  # noqa: SLF001
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend over asyncio streams (see the module docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with _deadline(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, limit=1 << 20
                )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with _deadline(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def use_asyncio_backend(transport: Any) -> bool:
    """Put :class:`AsyncioBackend` under an ``httpx.AsyncHTTPTransport``'s connection pool (before
    its first request). Returns False, leaving the transport as it was, when the pool is not the
    httpcore shape this was written against."""
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        return False
    pool._network_backend = AsyncioBackend()  # noqa: SLF001 - httpx exposes no parameter for it
    return True


__all__ = ["AsyncioBackend", "AsyncioStream", "use_asyncio_backend"]
