"""engine.transport.http1 against tiny trio servers written here, over loopback: h11
servers, and scripted ones that answer with exact bytes."""

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
    HTTPError,
    HTTPInvalidRequest,
    HTTPResponseTooLarge,
    HTTPTimeout,
    Origin,
    Response,
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


# --- scripted answers: exact bytes, however the server chooses to send them

Script = Callable[[trio.SocketStream, int], Awaitable[None]]


class _RawServer:
    """Reads each request (with h11) and answers with `script(stream, index)`: raw bytes.

    `index` counts requests across connections; `per_connection` lists each
    connection's request bodies.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.per_connection: list[list[bytes]] = []
        self.heads: list[h11.Request] = []

    async def _handle(self, stream: trio.SocketStream) -> None:
        mine: list[bytes] = []
        self.per_connection.append(mine)
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while True:
                    body = b""
                    while True:
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(event, h11.Request):
                            self.heads.append(event)
                        elif isinstance(event, h11.Data):
                            body += event.data
                        elif isinstance(event, h11.EndOfMessage):
                            break
                        elif isinstance(event, h11.ConnectionClosed):
                            return
                    mine.append(body)
                    self.requests.append(body)
                    await self.script(stream, len(self.requests) - 1)
                    # The answer was raw bytes: h11 did not see it, so start it afresh.
                    conn = h11.Connection(h11.SERVER)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
                pass

    async def start(self, nursery: trio.Nursery) -> Origin:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        return Origin("http", "127.0.0.1", listeners[0].socket.getsockname()[1])


def _answers(*answers: bytes, byte_by_byte: bool = False) -> Script:
    """The `index`-th request gets `answers[index]` (the last one repeated)."""

    async def script(stream: trio.SocketStream, index: int) -> None:
        answer = answers[min(index, len(answers) - 1)]
        if not byte_by_byte:
            await stream.send_all(answer)
            return
        for i in range(len(answer)):
            await stream.send_all(answer[i : i + 1])
            await trio.lowlevel.checkpoint()

    return script


async def _exchange(
    script: Script, bodies: list[bytes], *, method: str = "POST", max_response_bytes: int = 1 << 20
) -> tuple[list[Response | HTTPError], _RawServer, HTTPConnection]:
    """Send `bodies` one after the other on one HTTPConnection; each one's response or error."""
    server = _RawServer(script)
    results: list[Response | HTTPError] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = await server.start(nursery)
            connection = HTTPConnection(origin, max_response_bytes=max_response_bytes)
            for body in bodies:
                try:
                    results.append(await connection.request(method, "/m", [], body))
                except HTTPError as exc:
                    results.append(exc)
            await connection.aclose()
            nursery.cancel_scope.cancel()
    return results, server, connection


def _invalid(result: Response | HTTPError) -> bool:
    return (
        isinstance(result, HTTPConnectionError)
        and result.request_sent
        and "invalid or truncated response" in str(result)
    )


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_an_answer_sent_one_byte_at_a_time_is_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2;ext=1\r\nab\r\n3\r\ncde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    results, server, connection = await _exchange(
        _answers(OK, chunked, byte_by_byte=True), [b"1", b"2", b"3"]
    )
    assert [r.body for r in results if isinstance(r, Response)] == [b"ok", b"abcde", b"abcde"]
    assert connection.connections_opened == 1 and server.per_connection == [[b"1", b"2", b"3"]]


async def test_a_chunked_answer_with_extensions_and_trailers_keeps_the_connection() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5 ; a=b;c\r\nhello\r\n1\r\n!\r\n0\r\nExpires: x\r\nDigest: y\r\n\r\n"
    )
    results, _, connection = await _exchange(_answers(chunked), [b"1", b"2"])
    assert [r.body for r in results if isinstance(r, Response)] == [b"hello!", b"hello!"]
    assert connection.connections_opened == 1


async def test_an_answer_without_length_is_read_to_the_close_and_not_reused() -> None:
    async def close_delimited(stream: trio.SocketStream, index: int) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
        await stream.send_all(b"close %d" % index)
        await stream.aclose()

    results, server, connection = await _exchange(close_delimited, [b"1", b"2"])
    assert [r.body for r in results if isinstance(r, Response)] == [
        b"until close 0",
        b"until close 1",
    ]
    assert connection.connections_opened == 2 and server.per_connection == [[b"1"], [b"2"]]


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 2\r\nContent-Length: 3\r\n",
        b"Content-Length: 2, 3\r\n",
        b"Content-Length: -2\r\n",
        b"Content-Length: two\r\n",
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"X-Folded: a\r\n b\r\nContent-Length: 2\r\n",
    ],
)
async def test_an_ambiguous_or_malformed_answer_fails_as_sent_and_drops_the_connection(
    head: bytes,
) -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + head + b"\r\nok"
    results, server, connection = await _exchange(_answers(answer, OK), [b"1", b"2"])
    assert _invalid(results[0])
    assert isinstance(results[1], Response) and results[1].body == b"ok"
    # The failed request was not sent again; the next one went on a new connection.
    assert server.per_connection == [[b"1"], [b"2"]] and connection.connections_opened == 2


async def test_identical_duplicate_content_lengths_are_accepted() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok"
    results, _, connection = await _exchange(_answers(answer), [b"1", b"2"])
    assert [r.body for r in results if isinstance(r, Response)] == [b"ok", b"ok"]
    assert connection.connections_opened == 1


async def test_a_head_larger_than_64_kib_is_refused() -> None:
    huge = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"a" * (70 * 1024) + b"\r\n"
    results, _, _ = await _exchange(_answers(huge + b"Content-Length: 2\r\n\r\nok"), [b"1"])
    assert _invalid(results[0]) and "head larger than 65536" in str(results[0])


async def test_a_chunked_body_above_the_limit_is_refused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024
    results, _, _ = await _exchange(
        _answers(answer + b"\r\n" + b"1\r\n"), [b"1"], max_response_bytes=1024
    )
    assert isinstance(results[0], HTTPResponseTooLarge) and results[0].status == 200


async def test_interim_answers_are_skipped_and_the_connection_kept() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + OK
    results, _, connection = await _exchange(_answers(answer), [b"1", b"2"])
    assert [(r.status, r.body) for r in results if isinstance(r, Response)] == [(200, b"ok")] * 2
    assert connection.connections_opened == 1


async def test_101_switching_protocols_is_an_invalid_answer() -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    results, _, _ = await _exchange(_answers(answer), [b"1"])
    assert _invalid(results[0])


async def test_an_http_1_0_answer_is_not_reused_unless_keep_alive() -> None:
    """The server keeps the connection open: only the answer's version says not to reuse it."""
    plain = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    results, server, connection = await _exchange(_answers(plain), [b"1", b"2"])
    assert all(isinstance(r, Response) and r.body == b"ok" for r in results)
    assert connection.connections_opened == 2 and server.per_connection == [[b"1"], [b"2"]]

    kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    results, server, connection = await _exchange(_answers(kept), [b"1", b"2"])
    assert all(isinstance(r, Response) for r in results) and connection.connections_opened == 1


async def test_connection_close_is_honoured_even_if_the_server_keeps_the_socket_open() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    results, server, connection = await _exchange(_answers(answer), [b"1", b"2"])
    assert all(isinstance(r, Response) for r in results)
    assert connection.connections_opened == 2 and server.per_connection == [[b"1"], [b"2"]]


async def test_bytes_after_the_answer_mean_the_connection_is_not_reused() -> None:
    junk = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
    results, server, connection = await _exchange(_answers(junk, OK), [b"1", b"2"])
    # The second request must not read the stale answer queued behind the first.
    assert [r.body for r in results if isinstance(r, Response)] == [b"ok", b"ok"]
    assert connection.connections_opened == 2 and server.per_connection == [[b"1"], [b"2"]]


async def test_stray_bytes_on_an_idle_connection_are_seen_before_reuse() -> None:
    """Rule 1 with junk rather than EOF: the poll before reuse finds it."""
    junk_sent = trio.Event()

    async def answer_then_junk(stream: trio.SocketStream, index: int) -> None:
        await stream.send_all(OK)
        if index == 0:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
            junk_sent.set()

    server = _RawServer(answer_then_junk)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            assert (await connection.request("POST", "/", [], b"1")).body == b"ok"
            await junk_sent.wait()
            assert (await connection.request("POST", "/", [], b"2")).body == b"ok"
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert connection.connections_opened == 2 and server.per_connection == [[b"1"], [b"2"]]


async def test_answers_to_head_and_204_have_no_body_and_keep_the_connection() -> None:
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    results, _, connection = await _exchange(_answers(head_answer), [b"", b""], method="HEAD")
    assert [(r.status, r.body) for r in results if isinstance(r, Response)] == [(200, b"")] * 2
    assert connection.connections_opened == 1
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    results, _, connection = await _exchange(_answers(no_content), [b"1", b"2"])
    assert [(r.status, r.body) for r in results if isinstance(r, Response)] == [(204, b"")] * 2
    assert connection.connections_opened == 1


async def test_a_truncated_answer_fails_as_sent() -> None:
    async def truncated(stream: trio.SocketStream, index: int) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await stream.aclose()

    results, server, _ = await _exchange(truncated, [b"once"])
    assert _invalid(results[0]) and server.requests == [b"once"]


async def test_a_server_that_hangs_up_on_a_reused_connection_gets_the_request_once() -> None:
    """Once written whole, a request is never written again, even on a reused connection."""

    async def answer_first_only(stream: trio.SocketStream, index: int) -> None:
        if index == 0:
            await stream.send_all(OK)
        else:
            await stream.aclose()

    results, server, connection = await _exchange(answer_first_only, [b"1", b"2"])
    assert isinstance(results[0], Response)
    failed = results[1]
    assert isinstance(failed, HTTPConnectionError) and failed.request_sent
    assert "closed the connection before answering" in str(failed)
    assert server.requests == [b"1", b"2"] and connection.connections_opened == 1


def _shut_for_writing(stream: trio.abc.Stream) -> None:
    """Our side of the socket refuses writes (EPIPE) while looking idle to a poll."""
    assert isinstance(stream, trio.SocketStream)
    stream.socket.shutdown(trio.socket.SHUT_WR)


async def test_a_write_that_fails_on_a_reused_connection_is_retried_once_on_a_new_one() -> None:
    """Rule 2: the server never saw the request, so it is written once more, once only."""
    server = _RawServer(_answers(OK))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            assert (await connection.request("POST", "/", [], b"1")).body == b"ok"
            assert connection._stream is not None
            # No checkpoint before the request: the server cannot see our FIN and
            # hang up first, so the idle poll passes and the write itself fails.
            _shut_for_writing(connection._stream)
            assert (await connection.request("POST", "/", [], b"2")).body == b"ok"
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert server.per_connection == [[b"1"], [b"2"]] and connection.connections_opened == 2


def _open_unwritable_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, every new connection refuses writes."""
    real_open = trio.open_tcp_stream

    async def unwritable_open(host: str, port: int) -> trio.SocketStream:
        stream = await real_open(host, port)
        _shut_for_writing(stream)
        return stream

    monkeypatch.setattr(trio, "open_tcp_stream", unwritable_open)


async def test_a_write_retried_on_a_new_connection_is_not_retried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _RawServer(_answers(OK))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            assert (await connection.request("POST", "/", [], b"1")).body == b"ok"
            assert connection._stream is not None
            _shut_for_writing(connection._stream)
            _open_unwritable_connections(monkeypatch)
            with pytest.raises(HTTPConnectionError) as caught:
                await connection.request("POST", "/", [], b"2")
            nursery.cancel_scope.cancel()
    assert caught.value.request_sent is False and "writing" in str(caught.value)
    assert connection.connections_opened == 2 and server.requests == [b"1"]


async def test_a_write_that_fails_on_a_new_connection_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = _RawServer(_answers(OK))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            connection = HTTPConnection(await server.start(nursery))
            _open_unwritable_connections(monkeypatch)
            with pytest.raises(HTTPConnectionError) as caught:
                await connection.request("POST", "/", [], b"1")
            nursery.cancel_scope.cancel()
    assert caught.value.request_sent is False and "writing" in str(caught.value)
    assert connection.connections_opened == 1 and server.requests == []


async def test_the_request_bytes_carry_host_length_and_the_callers_headers() -> None:
    received = bytearray()

    async def record(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                received.extend(data)
                if received.endswith(b'{"a":1}'):
                    await stream.send_all(OK)
                    return

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, record, 0)
            port = listeners[0].socket.getsockname()[1]
            connection = HTTPConnection(Origin("http", "127.0.0.1", port))
            headers = [(b"authorization", b"Bearer t")]
            response = await connection.request("POST", "/v1/PN/messages", headers, b'{"a":1}')
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert response.body == b"ok"
    assert bytes(received) == (
        b"POST /v1/PN/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nauthorization: Bearer t\r\n"
        b'Content-Length: 7\r\n\r\n{"a":1}' % port
    )


async def test_a_header_that_cannot_be_written_fails_the_send_unsent() -> None:
    """A tenant's access token with a line break must neither inject a header nor raise
    out of the gateway: the send fails as not sent, and nothing reaches the server."""
    server = _RawServer(_answers(OK))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            origin = await server.start(nursery)
            connection = HTTPConnection(origin)
            with pytest.raises(HTTPInvalidRequest) as refused:
                await connection.request("POST", "/", [(b"authorization", b"a\r\nX-Evil: 1")])
            assert refused.value.request_sent is False
            gateway = CloudApiGateway()
            url = f"http://127.0.0.1:{origin.port}/v21.0"
            endpoint = AccountEndpoint("acct", url, "PN", "token\r\nX-Evil: 1")
            async with gateway.open_session() as session:
                result = await session.send(endpoint, OutgoingMessage(1, "+1555", "text", {}))
            nursery.cancel_scope.cancel()
    assert (result.ok, result.may_have_arrived) == (False, False)
    assert "invalid request" in (result.error_message or "")
    assert server.requests == [] and connection.connections_opened == 0


async def test_the_read_deadline_covers_the_whole_answer_on_a_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that trickles its answer forever is cut off at read_timeout (virtual 30 s),
    as sent, and the next request goes on a new connection."""

    async def trickle(stream: trio.SocketStream, index: int) -> None:
        if index:
            await stream.send_all(OK)
            return
        await stream.send_all(b"HTTP/1.1 200 OK\r\n")
        while True:  # a header byte every virtual second: never a complete head
            await trio.sleep(1)
            await stream.send_all(b"X-Slow: 1\r\n")

    server = _RawServer(trickle)
    async with trio.open_nursery() as nursery:
        connection = HTTPConnection(await server.start(nursery), read_timeout=30.0)
        started = trio.current_time()
        with pytest.raises(HTTPTimeout) as caught:
            await connection.request("POST", "/", [], b"1")
        assert trio.current_time() - started == pytest.approx(30.0)
        assert caught.value.request_sent
        assert (await connection.request("POST", "/", [], b"2")).body == b"ok"
        await connection.aclose()
        nursery.cancel_scope.cancel()
    assert server.per_connection == [[b"1"], [b"2"]] and connection.connections_opened == 2
