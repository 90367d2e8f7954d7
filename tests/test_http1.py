"""engine.transport.http1 against a tiny trio + h11 server written here, over loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import pytest
import trio

from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.transport.cloud_api import CloudApiGateway
from engine.transport.http1 import (
    ConnectionsByOrigin,
    HTTPConnection,
    HTTPConnectionError,
    HTTPResponseTooLarge,
    HTTPTimeout,
    Origin,
    split_url,
)

Handler = Callable[[trio.SocketStream, h11.Connection], Awaitable[None]]


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> bytes | None:
    """The next request's body, or None when the client closed the connection."""
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
) -> None:
    if headers is None:
        headers = [(b"content-length", b"%d" % len(body))]
    out = conn.send(h11.Response(status_code=200, headers=headers)) or b""
    for chunk in chunks if chunks is not None else [body]:
        out += conn.send(h11.Data(data=chunk)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)


class _Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            await self.handler(stream, h11.Connection(h11.SERVER))

    async def start(self, nursery: trio.Nursery) -> Origin:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]
        return Origin("http", "127.0.0.1", self.port)


async def test_keep_alive_connection_is_reused() -> None:
    async def echo(stream: trio.SocketStream, conn: h11.Connection) -> None:
        while (body := await _read_request(stream, conn)) is not None:
            server.requests.append(body)
            await _respond(stream, conn, b"echo:" + body)
            conn.start_next_cycle()

    server = _Server(echo)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            for i in range(5):
                response = await connection.request("POST", "/x", [], b"n%d" % i)
                assert (response.status, response.body) == (200, b"echo:n%d" % i)
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert server.connections == 1 and connection.connections_opened == 1
    assert server.requests == [b"n0", b"n1", b"n2", b"n3", b"n4"]


async def test_idle_connection_closed_by_server_is_replaced_transparently() -> None:
    closed = trio.Event()

    async def one_request_per_connection(stream: trio.SocketStream, conn: h11.Connection) -> None:
        body = await _read_request(stream, conn)
        assert body is not None
        server.requests.append(body)
        await _respond(stream, conn, b"ok")  # keep-alive answer, then an idle-timeout close
        await stream.aclose()
        closed.set()

    server = _Server(one_request_per_connection)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            assert (await connection.request("POST", "/", [], b"first")).body == b"ok"
            await closed.wait()
            assert (await connection.request("POST", "/", [], b"second")).body == b"ok"
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert server.requests == [b"first", b"second"]
    assert connection.connections_opened == 2


async def test_request_that_reached_the_server_is_never_resent() -> None:
    async def read_then_hang_up(stream: trio.SocketStream, conn: h11.Connection) -> None:
        body = await _read_request(stream, conn)
        if body is not None:
            server.requests.append(body)
        # closes without answering: the client cannot know whether we acted on it

    server = _Server(read_then_hang_up)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            with pytest.raises(HTTPConnectionError) as caught:
                await connection.request("POST", "/", [], b"pay once")
            nursery.cancel_scope.cancel()
    assert caught.value.request_sent
    assert server.requests == [b"pay once"]


async def test_read_timeout_raises_http_timeout() -> None:
    never = trio.Event()

    async def silent(stream: trio.SocketStream, conn: h11.Connection) -> None:
        await _read_request(stream, conn)
        await never.wait()

    server = _Server(silent)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery), read_timeout=0.2)
            with pytest.raises(HTTPTimeout) as caught:
                await connection.request("GET", "/", [])
            nursery.cancel_scope.cancel()
    assert caught.value.request_sent


async def test_chunked_response_is_reassembled() -> None:
    async def chunked(stream: trio.SocketStream, conn: h11.Connection) -> None:
        while await _read_request(stream, conn) is not None:
            await _respond(
                stream, conn, b"", [(b"transfer-encoding", b"chunked")], [b"ab", b"cd", b"ef"]
            )
            conn.start_next_cycle()

    server = _Server(chunked)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            for _ in range(2):
                response = await connection.request("GET", "/", [])
                assert response.body == b"abcdef"
                assert (b"transfer-encoding", b"chunked") in response.headers
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert server.connections == 1


async def test_connection_close_response_opens_a_new_connection_next_time() -> None:
    async def closing(stream: trio.SocketStream, conn: h11.Connection) -> None:
        await _read_request(stream, conn)
        await _respond(stream, conn, b"bye", [(b"connection", b"close")], [b"bye"])

    server = _Server(closing)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            for _ in range(3):
                assert (await connection.request("GET", "/", [])).body == b"bye"
            nursery.cancel_scope.cancel()
    assert server.connections == 3 == connection.connections_opened


async def test_refused_connection_was_not_sent() -> None:
    with trio.fail_after(10):
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        connection = HTTPConnection(Origin("http", "127.0.0.1", port))
        with pytest.raises(HTTPConnectionError) as caught:
            await connection.request("POST", "/", [], b"x")
    assert not caught.value.request_sent


async def test_connections_by_origin_keeps_one_connection_per_origin() -> None:
    async def echo(stream: trio.SocketStream, conn: h11.Connection) -> None:
        while (body := await _read_request(stream, conn)) is not None:
            await _respond(stream, conn, body)
            conn.start_next_cycle()

    first, second = _Server(echo), _Server(echo)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a, b = await first.start(nursery), await second.start(nursery)
            async with ConnectionsByOrigin() as connections:
                for origin in (a, b, a, b):
                    response = await connections.get(origin).request("POST", "/", [], b"x")
                    assert response.body == b"x"
            nursery.cancel_scope.cancel()
    assert first.connections == second.connections == 1


def test_split_url() -> None:
    assert split_url("https://graph.facebook.com/v21.0") == (
        Origin("https", "graph.facebook.com", 443),
        "/v21.0",
    )
    assert split_url("http://127.0.0.1:8080/hook?x=1") == (
        Origin("http", "127.0.0.1", 8080),
        "/hook?x=1",
    )
    with pytest.raises(ValueError):
        split_url("ftp://example.com/")


async def test_cancelled_request_leaves_the_connection_usable() -> None:
    received = trio.Event()

    async def slow_first(stream: trio.SocketStream, conn: h11.Connection) -> None:
        while (body := await _read_request(stream, conn)) is not None:
            server.requests.append(body)
            if body == b"slow":
                received.set()
                await trio.sleep_forever()
            await _respond(stream, conn, body)
            conn.start_next_cycle()

    server = _Server(slow_first)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            async with trio.open_nursery() as requests:
                requests.start_soon(connection.request, "POST", "/", [], b"slow")
                await received.wait()
                requests.cancel_scope.cancel()
            assert (await connection.request("POST", "/", [], b"next")).body == b"next"
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert server.requests == [b"slow", b"next"] and connection.connections_opened == 2


async def test_an_oversized_answer_is_refused_after_the_limit_not_read_to_the_end() -> None:
    """A gigabyte answer must fail the request with bounded memory: the client stops
    reading at its limit, so the server's writes stall long before the end."""
    limit, offered = 64 * 1024, 1 << 30  # the server offers 1 GiB
    sent = 0

    async def flood(stream: trio.SocketStream, conn: h11.Connection) -> None:
        nonlocal sent
        await _read_request(stream, conn)
        head = conn.send(
            h11.Response(status_code=200, headers=[(b"content-length", b"%d" % offered)])
        )
        await stream.send_all(head or b"")
        chunk = b"x" * 65536
        try:
            while sent < offered:
                await stream.send_all(conn.send(h11.Data(data=chunk)) or b"")
                sent += len(chunk)
        except trio.BrokenResourceError:
            pass  # the client hung up

    server = _Server(flood)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = await server.start(nursery)
            connection = HTTPConnection(origin, max_response_bytes=limit)
            with pytest.raises(HTTPResponseTooLarge) as refused:
                await connection.request("POST", "/messages", [], b"{}")
            assert refused.value.status == 200
            await connection.aclose()
            nursery.cancel_scope.cancel()
    # What the kernel buffers on loopback is a few MiB at most, far from 1 GiB.
    assert sent < 64 * 1024 * 1024


async def test_the_gateway_fails_a_send_whose_answer_is_too_large() -> None:
    async def flood(stream: trio.SocketStream, conn: h11.Connection) -> None:
        await _read_request(stream, conn)
        body = b"[" + b"0," * (4 << 20) + b"0]"  # 8 MiB of JSON, above the 1 MiB default
        try:
            await _respond(stream, conn, body)
        except trio.BrokenResourceError:
            pass

    server = _Server(flood)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = await server.start(nursery)
            gateway = CloudApiGateway()
            endpoint = AccountEndpoint("acct", f"http://127.0.0.1:{origin.port}/v21.0", "PN", "t")
            async with gateway.open_session() as session:
                result = await session.send(endpoint, OutgoingMessage(1, "+1555", "text", {}))
            nursery.cancel_scope.cancel()
    assert (result.ok, result.http_status, result.may_have_arrived) == (False, 200, False)
    assert "larger than" in (result.error_message or "")
