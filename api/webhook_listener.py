"""A dedicated listener for WhatsApp webhooks: h11 driven directly over `trio.serve_tcp`.

Meta posts about one status per request, three or more per message sent, so
this door must cost far less than a send. hypercorn and Quart cost ~0.8 ms of
CPU per request; here each keep-alive connection is one task, and what a
request does is `api/webhooks/receive.py`, the same code the API port's
`/webhooks/whatsapp` runs. docs/webhooks.md explains running it behind a
reverse proxy.

Where the time went, and what is done about it (py-spy, benchmarks/webhook_ingestion.py):

- h11 parsing a request head cost ~70 µs, half the budget: the plain heads
  webhooks have are read by `HeadReader.parse_plain`
  (engine/core/http1_request_head.py, ~5 µs), which hands every other head to
  h11 (a fresh `h11.Connection` per such request, which also reads chunked
  bodies and answers `Expect: 100-continue`). A body of known length is read
  here.
- h11 does not write the answers: they are a few fixed headers rendered here,
  where h11's event and state machinery cost as much as parsing the request.
- The socket is read and written through its descriptor, waiting with
  `trio.lowlevel.wait_readable`: trio's socket methods cost an extra pass
  through the scheduler per call. Each read waits first, so every request is
  a checkpoint and no connection can starve the others.

Serves `POST|GET /webhooks/whatsapp` and `GET /healthz` (the listener is
accepting). Bounded: a request head of `MAX_HEAD_BYTES` (431), a body of
`webhooks.max_body_bytes` (413, then the connection closes), and at most
`TIMEOUT` seconds for each request, the wait for it included (idle keep-alive
connections close then).
"""

from __future__ import annotations

import logging
from functools import partial
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import parse_qsl

import h11
import trio

from api.webhooks.receive import Answer, WebhookDoor, failure
from engine.core.http1_request_head import HeadReader, ReceivedHead
from engine.socket_wire import SocketWire

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
# A connection closes when no complete request came for TIMEOUT/2 to TIMEOUT seconds: longer
# than common proxies keep idle upstream connections (60 s), so they close first.
TIMEOUT = 150.0

_PATH = b"/webhooks/whatsapp"
_SIGNATURE = b"x-hub-signature-256"  # the first one counts
_HEADS = HeadReader({_SIGNATURE})
_HEALTHY = Answer(200, b'{"status":"ok"}')
_HEAD_TOO_LARGE = failure(
    431, "request_header_too_large", f"The request head is larger than {MAX_HEAD_BYTES} bytes"
)
_INTERNAL_ERROR = failure(500, "internal_error", "Something went wrong on our side; try again")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def serve_webhook_listener(
    door: WebhookDoor,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started(port)` once listening (port 0: any)."""
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, partial(_serve_connection, door), port, host=host)
        )
        bound: int = listeners[0].socket.getsockname()[1]
        task_status.started(bound)


async def _serve_connection(door: WebhookDoor, stream: trio.SocketStream) -> None:
    wire = SocketWire(stream)
    received, closed = b"", False  # bytes read beyond the previous request, and EOF
    with trio.CancelScope(deadline=trio.current_time() + TIMEOUT) as deadline:
        try:
            while True:
                now = trio.current_time()
                if deadline.deadline - now < TIMEOUT / 2:
                    # Moving a deadline costs; half the time is plenty of slack.
                    deadline.deadline = now + TIMEOUT
                head, conn, received, closed = await _next_head(wire, received, closed)
                if head is None:
                    return  # the client is done
                served = await _serve_request(wire, door, head, conn, received, closed)
                await wire.send_all(_render(served.answer, close=served.close))
                if served.close:
                    return
                received, closed = served.unread, served.closed
        except h11.RemoteProtocolError as error:
            # Not HTTP, or a head too large: say so, then close.
            code = "request_header_too_large" if error.error_status_hint == 431 else "bad_request"
            answer = failure(
                error.error_status_hint, code, f"The request is not valid HTTP/1.1: {error}"
            )
            await _send_quietly(wire, _render(answer, close=True))
        except _BROKEN:
            pass
        except Exception:
            # A bug must not take the daemon down with it: this connection ends.
            log.exception("webhook listener: unexpected error")
            await _send_quietly(wire, _render(_INTERNAL_ERROR, close=True))
        finally:
            await trio.aclose_forcefully(stream)


async def _next_head(
    wire: SocketWire, received: bytes, closed: bool
) -> tuple[ReceivedHead | None, h11.Connection | None, bytes, bool]:
    """The next request's head, the h11 connection that read it (None when
    `parse_plain` did), and what was received beyond it; None at end of stream."""
    received, end, closed = await wire.receive_head(received, closed, MAX_HEAD_BYTES)
    if not received and closed:
        return None, None, b"", True
    if end >= 0:
        head = _HEADS.parse_plain(received[:end])
        if head is not None:
            return head, None, received[end + 4 :], closed
    # Anything else is h11's to read, accept or refuse (RemoteProtocolError).
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    conn.receive_data(received)
    if closed:
        conn.receive_data(b"")  # b"" is h11's end of stream
    request = await wire.next_h11_event(conn)
    if type(request) is not h11.Request:
        return None, None, b"", True  # ConnectionClosed
    unread, closed = conn.trailing_data
    return _HEADS.from_h11(request), conn, unread, closed


class _Served(NamedTuple):
    answer: Answer
    close: bool  # the connection ends after the answer
    unread: bytes = b""  # received beyond this request: the next one begins there
    closed: bool = False  # the client closed its side after them


async def _serve_request(
    wire: SocketWire,
    door: WebhookDoor,
    head: ReceivedHead,
    conn: h11.Connection | None,
    received: bytes,
    closed: bool,
) -> _Served:
    if head.size > MAX_HEAD_BYTES:
        # h11 bounds only a head still incomplete; one that arrived whole is checked here.
        return _Served(_HEAD_TOO_LARGE, close=True)
    if head.content_length > door.max_body_bytes:
        return _Served(door.too_large, close=True)  # not read: the connection ends
    if conn is not None and conn.they_are_waiting_for_100_continue:
        await wire.send_all(_CONTINUE)
    if head.chunked:
        assert conn is not None  # only h11 reads chunked heads
        body = await _read_chunked(conn, wire, door.max_body_bytes)
        if body is None:
            return _Served(door.too_large, close=True)
        received, closed = conn.trailing_data
    else:
        # A known length needs no parser: h11's reader cost a fifth of a request.
        while len(received) < head.content_length:
            more = b"" if closed else await wire.receive()
            if not more:
                raise trio.BrokenResourceError("the client closed mid-request")
            received += more
        body, received = received[: head.content_length], received[head.content_length :]
    return _Served(_route(door, head, body), not head.keep_alive, received, closed)


def _route(door: WebhookDoor, head: ReceivedHead, body: bytes) -> Answer:
    path, _, query = head.target.partition(b"?")
    method = head.method.decode("ascii", "replace")
    if path == _PATH:
        if method == "POST":
            return door.notification(head.headers.get(_SIGNATURE), body)
        if method == "GET":
            return door.subscription(_query(query))
        return failure(405, "method_not_allowed", f"{method} is not allowed on {_PATH.decode()}")
    if path == b"/healthz" and method == "GET":
        return _HEALTHY
    return failure(404, "not_found", f"No route for {method} {path.decode('ascii', 'replace')}")


async def _read_chunked(conn: h11.Connection, wire: SocketWire, limit: int) -> bytes | None:
    """A chunked body, through h11; None once it exceeds `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await wire.next_h11_event(conn)
        if type(event) is h11.Data:
            size += len(event.data)
            if size > limit:
                return None
            chunks.append(event.data)
        elif type(event) is h11.EndOfMessage:
            return b"".join(chunks)
        else:  # ConnectionClosed mid-body
            raise trio.BrokenResourceError("the client closed mid-request")


def _query(query: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        params.setdefault(name, value)  # the first wins, as in Quart's request.args
    return params


def _render(answer: Answer, *, close: bool) -> bytes:
    """The whole HTTP/1.1 response: a status line and three headers at most."""
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (answer.status, HTTPStatus(answer.status).phrase.encode()),
            b"content-type: %s\r\ncontent-length: %d\r\n" % (answer.content_type, len(answer.body)),
            b"connection: close\r\n\r\n" if close else b"\r\n",
            answer.body,
        )
    )


async def _send_quietly(wire: SocketWire, data: bytes) -> None:
    try:
        await wire.send_all(data)
    except _BROKEN:
        pass
