"""The plain-asyncio network backend under the shared HTTP client, over real loopback sockets:
a tiny raw HTTP/1.1 server (asyncio streams) plays the platform so each test controls the
connection itself — keep-alive, a server that closes an idle connection, one that never answers,
a port nobody listens on."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import httpcore
import httpx
import pytest

from connectors.netbackend import AsyncioBackend, use_asyncio_backend

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head and Content-Length body), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head + body


def response(body: bytes, *, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, str, list[int]]:
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    return server, f"{'https' if tls else 'http'}://127.0.0.1:{port}", connections


def echo_counting(seen: list[bytes], label: bytes = b"ok") -> Handler:
    """A keep-alive server answering each request with ``label`` and its running number."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            seen.append(request)
            writer.write(response(b"%s %d" % (label, len(seen))))
            await writer.drain()

    return echo


def client(url: str, timeout: float = 5.0) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport()
    assert use_asyncio_backend(transport)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout)


def test_keep_alive_requests_with_bodies_reuse_one_connection() -> None:
    seen: list[bytes] = []

    async def main() -> list[str]:
        server, url, connections = await serve(echo_counting(seen))
        async with server, client(url) as http:
            out = [(await http.post("/x", json={"n": i})).text for i in range(3)]
            out.append((await http.get("/y")).text)
        assert connections == [1]
        return out

    assert asyncio.run(main()) == ["ok 1", "ok 2", "ok 3", "ok 4"]
    assert all(b'{"n":' in r for r in seen[:3]) and seen[3].startswith(b"GET /y")


def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(response(b"once"))  # keep-alive promised, then closed anyway
            await writer.drain()

    async def main() -> None:
        server, url, connections = await serve(one_then_close)
        async with server, client(url) as http:
            assert (await http.get("/a")).text == "once"
            await asyncio.sleep(0.05)  # the close reaches the client's event loop
            assert (await http.get("/b")).text == "once"
        assert len(connections) == 2

    asyncio.run(main())


def test_is_readable_tells_an_idle_connection_from_a_closed_one() -> None:
    """What httpcore asks of an idle pooled connection before reusing it, answered without a
    system call: False while the server keeps it open, True once the server closed it."""

    async def answer_then_close_on_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(b"first"))
        await writer.drain()
        await read_request(reader)
        writer.write(response(b"second", close=True))
        await writer.drain()

    async def exchange(stream: httpcore.AsyncNetworkStream, path: bytes) -> bytes:
        await stream.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return await stream.read(65536)

    async def main() -> None:
        server, url, _ = await serve(answer_then_close_on_second)
        port = int(url.rsplit(":", 1)[1])
        async with server:
            stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
            assert (await exchange(stream, b"/1")).endswith(b"first")
            await asyncio.sleep(0.05)
            assert stream.get_extra_info("is_readable") is False
            assert (await exchange(stream, b"/2")).endswith(b"second")
            await asyncio.sleep(0.05)
            assert stream.get_extra_info("is_readable") is True
            await stream.aclose()

    asyncio.run(main())


def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        server, url, _ = await serve(silent)
        async with server, client(url, timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/slow")

    asyncio.run(main())


def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused

        async def main() -> None:
            async with client(f"http://127.0.0.1:{port}") as http:
                with pytest.raises(httpx.ConnectError):
                    await http.get("/")

        asyncio.run(main())


def test_connectors_use_it_on_real_sockets_unless_told_not_to() -> None:
    from connectors.registry import connector_class, emulator_class

    def backend(options: dict[str, object]) -> object:
        settings = emulator_class("acquire")().connection_settings(base_url="http://127.0.0.1:9", options=options)
        connector = connector_class("acquire")(settings)
        return connector.http._client._transport._pool._network_backend  # type: ignore[attr-defined]

    assert isinstance(backend({}), AsyncioBackend)
    assert not isinstance(backend({"asyncio_backend": False}), AsyncioBackend)


def test_https_through_the_backend_verifies_the_server_and_keeps_the_connection() -> None:
    # The platforms are reached over TLS in production: the handshake (start_tls on the
    # stream), certificate verification and keep-alive must work through this backend.
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    served: list[bytes] = []

    async def main() -> list[str]:
        server, url, connections = await serve(echo_counting(served, b"tls"), tls=server_ctx)
        transport = httpx.AsyncHTTPTransport(verify=client_ctx)
        assert use_asyncio_backend(transport)
        async with server, httpx.AsyncClient(base_url=url, transport=transport, timeout=5.0) as http:
            out = [(await http.post("/x", json={"n": 1})).text, (await http.get("/y")).text]
            assert len(connections) == 1  # one TLS handshake, the connection kept alive
            # A client that does not trust this CA refuses the server.
            untrusting = httpx.AsyncHTTPTransport(verify=ssl.create_default_context())
            assert use_asyncio_backend(untrusting)
            async with httpx.AsyncClient(base_url=url, transport=untrusting, timeout=5.0) as stranger:
                with pytest.raises(httpx.ConnectError):
                    await stranger.get("/z")
        assert len(served) == 2  # the refused client's request never reached the server
        return out

    assert asyncio.run(main()) == ["tls 1", "tls 2"]
