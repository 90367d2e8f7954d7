"""Serving: one task per keep-alive connection over trio sockets, and the tasks that
post webhooks. `serve_simulator` is what tests, the demo and the CLI run.

The simulator shares the benchmarks' 2 cores with the daemon under test, so every µs
it spends is taken from what is measured. h11 cost most of it (~0.45 ms of CPU per
message): the plain heads the daemon sends are read by `HeadReader.parse_plain`
(engine/core/http1_request_head.py, the webhook listener's reader too), a body of known
length is sliced off the buffer here, and each answer is one pre-formatted bytes written
in one send. Every other head (chunked bodies, HTTP/1.0, Expect, anything
odd) goes through h11 as before, a fresh `h11.Connection` per such request; what h11
refuses is answered 400 and the connection closes. The socket is read and written
through its descriptor, as in api/webhook_listener.py: trio's socket methods cost an
extra pass through the scheduler per call.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import h11
import msgspec
import trio

from engine.core.http1_request_head import HeadReader, ReceivedHead
from engine.socket_wire import SocketWire
from engine.tools.simulator.cloud_api import CloudApi
from engine.tools.simulator.config import SimulatorConfig
from engine.tools.simulator.control import Control
from engine.tools.simulator.record import SimulatorState
from engine.tools.simulator.webhooks import Webhooks

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # h11's own default bound
MAX_BODY_BYTES = 16 * 1024 * 1024  # far above any send; a larger one is refused (413)
_NOT_FOUND = msgspec.json.encode(
    {"error": {"message": "Unknown path", "code": 100, "type": "GraphMethodException"}}
)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_AUTHORIZATION = b"authorization"
_HEADS = HeadReader({_AUTHORIZATION})
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class SimulatorHandle(msgspec.Struct, frozen=True):
    host: str
    port: int
    state: SimulatorState

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What to configure as an account's `api_url`."""
        return f"{self.url}/v21.0"


def _phone_number_id(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 3 and parts[-1] == "messages" and parts[-2]:
        return parts[-2]
    return None


def _bearer(authorization: bytes | None) -> bool:
    """`Authorization: Bearer <non-empty>` (the scheme is case-insensitive); the first
    Authorization header is the one that counts."""
    if authorization is None:
        return False
    return authorization[:7].lower() == b"bearer " and bool(authorization[7:].strip())


def _error(message: str) -> bytes:
    return msgspec.json.encode(
        {"error": {"message": message, "code": 100, "type": "GraphMethodException"}}
    )


class _Router:
    def __init__(self, config: SimulatorConfig, cloud_api: CloudApi, control: Control) -> None:
        self.latency = config.latency_ms / 1000
        self.cloud_api = cloud_api
        self.control = control

    async def route(self, head: ReceivedHead, body: bytes) -> tuple[int, bytes]:
        target = head.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        if path.startswith("/simulator/"):
            answer = await self.control.handle(head.method, path, query, body)
            return answer if answer is not None else (404, _NOT_FOUND)
        if head.method == b"POST":
            phone_number_id = _phone_number_id(path)
            if phone_number_id is not None:
                authorized = _bearer(head.headers.get(_AUTHORIZATION))
                answer = self.cloud_api.answer(phone_number_id, authorized, body)
                if self.latency:
                    await trio.sleep(self.latency)
                return answer
        return 404, _NOT_FOUND


_STATUS_LINES: dict[int, bytes] = {}


def _render(status: int, body: bytes, *, close: bool) -> bytes:
    """The whole answer: status line, Content-Type, Content-Length, body."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
    return b"%scontent-type: application/json\r\ncontent-length: %d\r\n%s%s" % (
        line,
        len(body),
        b"connection: close\r\n\r\n" if close else b"\r\n",
        body,
    )


class _Refused(Exception):
    """A request answered with `status` and the connection closed, unread."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _serve_connection(stream: trio.SocketStream, router: _Router) -> None:
    wire = SocketWire(stream)
    received, closed = b"", False  # bytes read beyond the previous request, and EOF
    try:
        while True:
            request = await _next_request(wire, received, closed)
            if request is None:
                return  # the client is done
            head, body, received, closed = request
            status, answer = await router.route(head, body)
            await wire.send_all(_render(status, answer, close=not head.keep_alive))
            if not head.keep_alive:
                return
    except h11.RemoteProtocolError as error:
        await _send_quietly(wire, 400, f"The request is not valid HTTP/1.1: {error}")
    except _Refused as refused:
        await _send_quietly(wire, refused.status, str(refused))
    except _BROKEN:
        pass
    except Exception:
        # A bug must not take the simulator (and the test or benchmark) down: this connection ends.
        log.exception("simulator: unexpected error")
    finally:
        await trio.aclose_forcefully(stream)


async def _next_request(
    wire: SocketWire, received: bytes, closed: bool
) -> tuple[ReceivedHead, bytes, bytes, bool] | None:
    """The next request's head and body, and what was received beyond them and whether
    the client closed after; None at a clean end of stream."""
    received, end, closed = await wire.receive_head(received, closed, MAX_HEAD_BYTES)
    if not received and closed:
        return None
    head = _HEADS.parse_plain(received[:end]) if end >= 0 else None
    if head is None:
        return await _next_request_h11(wire, received, closed)
    if head.content_length > MAX_BODY_BYTES:
        raise _Refused(413, f"The body is larger than {MAX_BODY_BYTES} bytes")
    received = received[end + 4 :]
    while len(received) < head.content_length:
        more = b"" if closed else await wire.receive()
        if not more:
            raise trio.BrokenResourceError("the client closed mid-request")
        received += more
    body, received = received[: head.content_length], received[head.content_length :]
    return head, body, received, closed


async def _next_request_h11(
    wire: SocketWire, received: bytes, closed: bool
) -> tuple[ReceivedHead, bytes, bytes, bool] | None:
    """The same through h11, the reference parser, for every head not of the plain shape."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    conn.receive_data(received)
    if closed:
        conn.receive_data(b"")  # b"" is h11's end of stream
    request = await wire.next_h11_event(conn)
    if type(request) is not h11.Request:
        return None  # ConnectionClosed
    if conn.they_are_waiting_for_100_continue:
        await wire.send_all(_CONTINUE)
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await wire.next_h11_event(conn)
        if type(event) is h11.Data:
            size += len(event.data)
            if size > MAX_BODY_BYTES:
                raise _Refused(413, f"The body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(event.data)
        elif type(event) is h11.EndOfMessage:
            break
        else:  # ConnectionClosed mid-body
            raise trio.BrokenResourceError("the client closed mid-request")
    received, closed = conn.trailing_data
    return _HEADS.from_h11(request), b"".join(chunks), received, closed


async def _send_quietly(wire: SocketWire, status: int, message: str) -> None:
    try:
        await wire.send_all(_render(status, _error(message), close=True))
    except _BROKEN:
        pass


async def serve_simulator(
    config: SimulatorConfig,
    *,
    task_status: trio.TaskStatus[SimulatorHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started(handle)` once the port is bound."""
    state = SimulatorState(config.keep_requests, config.keep_accepted, config.timeline_every)
    webhooks = Webhooks(config, state) if config.webhook_url else None
    cloud_api = CloudApi(config, state, webhooks)
    if webhooks is not None:
        webhooks.display_of = lambda phone: (
            cloud_api.behaviour(phone).display_phone_number or config.display_phone_number
        )
    router = _Router(config, cloud_api, Control(config, state, cloud_api, webhooks))
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, router)

    try:
        async with trio.open_nursery() as nursery:
            if webhooks is not None:
                for poster in webhooks.posters:
                    nursery.start_soon(webhooks.run_poster, poster)
            await nursery.start(trio.serve_listeners, handle, listeners)
            task_status.started(SimulatorHandle(config.host, port, state))
    finally:
        if webhooks is not None:
            await webhooks.aclose()
