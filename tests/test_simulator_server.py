"""The simulator's HTTP server: plain heads read by hand, everything else through h11.

Byte-level: each test writes raw requests on a socket and reads raw answers, so what is
checked is what the daemon's client sees (engine/tools/simulator/server.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from engine.tools.simulator import SimulatorConfig, SimulatorHandle, serve_simulator

SEND = json.dumps(
    {"messaging_product": "whatsapp", "to": "15550001", "type": "text", "text": {"body": "hi"}}
).encode()


def post(body: bytes = SEND, *, extra: bytes = b"", auth: bytes | None = b"Bearer t") -> bytes:
    head = b"POST /v21.0/1001/messages HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n"
    if auth is not None:
        head += b"authorization: " + auth + b"\r\n"
    return head + b"content-length: %d\r\n%s\r\n" % (len(body), extra) + body


GET_STATS = b"GET /simulator/stats HTTP/1.1\r\nhost: sim\r\n\r\n"


@asynccontextmanager
async def simulator() -> AsyncIterator[SimulatorHandle]:
    # A safety net, not a synchronisation: a server that never answers fails the test.
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle: SimulatorHandle = await nursery.start(
                serve_simulator, SimulatorConfig(port=0, latency_ms=0, mps=0)
            )
            yield handle
            nursery.cancel_scope.cancel()


class Answers:
    """Reads answers off one raw connection: (status, headers, body) each."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.raw = b""  # every byte received, for exact comparisons

    async def _more(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        self.raw += data
        return bool(data)

    async def next(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert await self._more(), "closed before an answer"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers[b"content-length"])
        while len(self.buffer) < length:
            assert await self._more(), "closed mid-answer"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    async def closed(self) -> bool:
        """True once the server closes (nothing more than what was read)."""
        return not self.buffer and not await self._more()


async def connect(handle: SimulatorHandle) -> tuple[trio.SocketStream, Answers]:
    stream = await trio.open_tcp_stream(handle.host, handle.port)
    return stream, Answers(stream)


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            for _ in range(200):
                await stream.send_all(post())
                status, headers, body = await answers.next()
                assert status == 200, body
                assert headers[b"content-type"] == b"application/json"
                assert json.loads(body)["messages"][0]["id"]
        assert handle.state.statistics().accepted == 200


async def test_answer_is_one_preformatted_response() -> None:
    # h11 wrote `HTTP/1.1 200 \r\n` with no reason phrase; the pre-formatted answers have one.
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            await stream.send_all(GET_STATS)
            status, _headers, body = await answers.next()
        assert status == 200
        assert answers.raw == (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )


async def test_requests_split_byte_by_byte() -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            for _ in range(2):
                for byte in post():
                    await stream.send_all(bytes([byte]))
                status, _headers, body = await answers.next()
                assert status == 200, body
        assert handle.state.statistics().accepted == 2


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            # A send, an unauthorized send, a stats read, a chunked send (h11), a send: one write.
            chunked = (
                b"POST /v21.0/1001/messages HTTP/1.1\r\nhost: sim\r\nauthorization: Bearer t\r\n"
                b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(SEND), SEND)
            )
            await stream.send_all(post() + post(auth=None) + GET_STATS + chunked + post())
            statuses = [(await answers.next())[0] for _ in range(5)]
            assert statuses == [200, 401, 200, 200, 200]
        assert handle.state.statistics().accepted == 3


async def test_connection_close_is_honoured() -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            # The second request must not be served: the first said close.
            await stream.send_all(post(extra=b"connection: close\r\n") + post())
            status, headers, _body = await answers.next()
            assert status == 200
            assert headers[b"connection"] == b"close"
            assert await answers.closed()
        assert handle.state.statistics().accepted == 1


@pytest.mark.parametrize(
    "auth", [None, b"Bearer ", b"Bearer    ", b"Basic dXNlcjpwYXNz", b"bearer"], ids=repr
)
async def test_missing_or_invalid_authorization_is_refused(auth: bytes | None) -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            await stream.send_all(post(auth=auth))
            status, _headers, body = await answers.next()
        assert status == 401
        assert json.loads(body)["error"]["code"] == 190


async def test_lowercase_bearer_is_accepted() -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            await stream.send_all(post(auth=b"bearer t"))
            status, _headers, body = await answers.next()
        assert status == 200, body


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"], ids=["plain", "h11"])
async def test_the_first_authorization_is_the_one_that_counts(version: bytes) -> None:
    bearer_first = post(extra=b"authorization: Basic dXNlcjpwYXNz\r\n")
    basic_first = post(auth=b"Basic dXNlcjpwYXNz", extra=b"authorization: Bearer t\r\n")
    async with simulator() as handle:
        statuses = []
        for request in (bearer_first, basic_first):
            stream, answers = await connect(handle)
            async with stream:
                await stream.send_all(request.replace(b"HTTP/1.1", version, 1))
                statuses.append((await answers.next())[0])
        assert statuses == [200, 401]


async def test_http_1_0_is_served_through_h11_then_closed() -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            await stream.send_all(post().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
            status, headers, _body = await answers.next()
            assert status == 200
            assert headers[b"connection"] == b"close"
            assert await answers.closed()


async def test_expect_100_continue_is_answered() -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            request = post(extra=b"expect: 100-continue\r\n")
            head, body = request.split(b"\r\n\r\n", 1)
            await stream.send_all(head + b"\r\n\r\n")
            while b"\r\n\r\n" not in answers.buffer:
                assert await answers._more()
            assert answers.buffer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            answers.buffer = answers.buffer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
            await stream.send_all(body)
            status, _headers, _body = await answers.next()
            assert status == 200


@pytest.mark.parametrize(
    "junk",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello and more
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"POST /v21.0/1/messages HTTP/1.1\r\nhost: a\r\ncontent-length: x\r\n\r\n",
        b"POST /v21.0/1/messages HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2"
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nx-long: " + b"a" * 20000,  # never ends
    ],
    ids=["tls", "no-colon", "bad-length", "two-lengths", "no-host", "gzip", "huge-head"],
)
async def test_malformed_head_is_answered_400_and_the_server_lives(junk: bytes) -> None:
    async with simulator() as handle:
        stream, answers = await connect(handle)
        async with stream:
            await stream.send_all(junk)
            status, headers, body = await answers.next()
            assert status == 400
            assert headers[b"connection"] == b"close"
            assert json.loads(body)["error"]["message"]
            assert await answers.closed()
        stream, answers = await connect(handle)
        async with stream:
            await stream.send_all(post())
            assert (await answers.next())[0] == 200


async def test_client_closing_mid_request_does_not_kill_the_server() -> None:
    async with simulator() as handle:
        for cut in (post()[:10], post()[:-5]):
            stream, _answers = await connect(handle)
            async with stream:
                await stream.send_all(cut)
        stream, answers = await connect(handle)
        async with stream:
            await stream.send_all(post())
            assert (await answers.next())[0] == 200
