"""One websocket connection's writes, in one order; frames built once, written straight out.

The Socket.IO fan-out (api/socketio_fanout.py) sends the same event to every socket of a
room. Through hypercorn's ASGI `send` each copy costs a wsproto frame, a lock, cancel
scopes and a scheduler checkpoint: about ten times the write itself. An outlet takes a
`Message` whose frame is built once for all sockets, queues it, and `flush` writes what is
queued with one non-blocking write; what the kernel does not take waits in the outlet and
the outlet's own task writes it when the socket is writable. A socket too slow for that
(`MAX_BACKLOG` bytes waiting) first loses the superseded messages that say so (`key`,
`campaign:stats` of one campaign), then is reported through `on_overflow`: publishing never
waits for a socket.

Straight writes need the TCP socket under hypercorn's websocket (HTTP/1.1 without TLS,
no permessage-deflate: declined, since an event is a few hundred bytes and compressing it
per socket would cost more than it saves). Then hypercorn's own writes on the connection
(replies to pings, the close) take turns with the outlet's through `_Gate`, which stands in
for hypercorn's per-connection send lock. Any other connection (TLS, HTTP/2, another
server) is written through the ASGI `send`, by the outlet's task, in the same order.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

log = logging.getLogger(__name__)

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

OUTLET_KEY = "campaign_engine.outlet"  # in the ASGI scope of a Socket.IO websocket
MAX_BACKLOG = 1 << 20  # bytes waiting in one outlet beyond the kernel's buffers

_TEXT, _BINARY = 0x81, 0x82  # FIN and the opcode


def frame(payload: bytes, opcode: int = _TEXT) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((opcode, size))
    elif size < 1 << 16:
        header = bytes((opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


class Message:
    """One websocket message, built once for every socket it goes to.

    `key`: messages with the same key say the same thing, the last one best: a socket
    that falls behind may skip all but the last (None: every one must arrive).
    """

    __slots__ = ("_frame", "binary", "key", "payload")

    def __init__(self, payload: bytes, *, key: str | None = None, binary: bool = False) -> None:
        self.payload = payload
        self.key = key
        self.binary = binary
        self._frame: bytes | None = None

    @classmethod
    def of(cls, data: str | bytes) -> Message:
        if isinstance(data, str):
            return cls(data.encode())
        return cls(bytes(data), binary=True)

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = frame(self.payload, _BINARY if self.binary else _TEXT)
        return self._frame

    def asgi(self) -> dict[str, Any]:
        if self.binary:
            return {"type": "websocket.send", "bytes": self.payload}
        return {"type": "websocket.send", "text": self.payload.decode()}


class _Raw:
    """What a straight write needs: the connection's socket, and hypercorn's stream."""

    def __init__(self, socket: Any, server: Any) -> None:
        self.socket = socket  # trio socket: fileno() is -1 once hypercorn closed it
        self.server = server


def _hypercorn_connection(send: Send) -> tuple[Any, Any] | None:
    """hypercorn's websocket stream and TCP server behind an ASGI `send`, if they are the
    HTTP/1.1, plain TCP kind an outlet can write to; None otherwise."""
    try:
        from hypercorn.protocol.h11 import H11Protocol
        from hypercorn.protocol.ws_stream import WSStream
        from hypercorn.trio.tcp_server import TCPServer
    except ImportError:  # pragma: no cover - another server
        return None
    stream = getattr(send, "__self__", None)
    if not isinstance(stream, WSStream):
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, TCPServer) or not isinstance(server.stream, trio.SocketStream):
        return None
    if not isinstance(server.send_lock, trio.Lock):
        return None
    return stream, server


class Outlet:
    """The writes of one websocket connection. `put` and `flush` never block; `run` is
    the connection's writer task (start it first, in the connection's nursery)."""

    def __init__(self, send: Send, on_overflow: Callable[[], None] | None = None) -> None:
        self._send = send
        self.on_overflow = on_overflow
        self._queue: deque[Message] = deque()
        self._head: memoryview | None = None  # the rest of a frame partly written
        self._backlog = 0  # bytes in _queue and _head
        self._raw: _Raw | None = None
        self._wake = trio.Event()
        self._drained: trio.Event | None = None  # while `aclose` waits
        self._head_written: trio.Event | None = None  # while `_Gate` waits
        self._hypercorn_waiting = 0
        self._hypercorn_writing = False
        self.accepted = False
        self.closed = False  # no more writes: the connection ended, or it overflowed
        self.overflowed = False
        self.scheduled = False  # a flush is due (api/socketio_fanout.py)

    @property
    def direct(self) -> bool:
        """Frames go straight to the socket (else through the ASGI send)."""
        return self._raw is not None

    @property
    def backlog(self) -> int:
        return self._backlog

    # --- the connection's life (trio) ---------------------------------------------------

    async def accept(self, message: MutableMapping[str, Any]) -> None:
        """Accept the websocket (the ASGI `websocket.accept`), then write straight when
        the connection allows it."""
        connection = _hypercorn_connection(self._send)
        if connection is not None:
            # Declined before the handshake answer is built (see the module docstring).
            connection[0].handshake.extensions = None
        await self._send(message)
        self.accepted = True
        if connection is None:
            return
        server = connection[1]
        lock = server.send_lock
        if lock.locked() or lock.statistics().tasks_waiting:  # pragma: no cover - defensive
            return
        server.send_lock = _Gate(self)
        self._raw = _Raw(server.stream.socket, server)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write what `flush` could not, until the outlet closes."""
        task_status.started()
        while not self.closed:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._raw is not None:
                await self._write_raw()
            else:
                await self._write_asgi()

    async def aclose(self, message: MutableMapping[str, Any], within: float = 5.0) -> None:
        """Send what is queued (for at most `within` seconds), then `message` (the ASGI
        `websocket.close`)."""
        with trio.move_on_after(within):
            while (self._queue or self._head is not None) and not self.closed:
                self._drained = trio.Event()
                self._wake.set()
                await self._drained.wait()
        self.end()
        await self._send(message)  # through hypercorn, and so through _Gate

    def end(self) -> None:
        """No more writes (the connection is over); wakes whoever waits."""
        self.closed = True
        self._drop()
        self._wake.set()
        self._signal()

    # --- writes (synchronous) ----------------------------------------------------------

    def put(self, message: Message) -> None:
        """Queue `message`; `flush` writes it."""
        if self.closed:
            return
        self._queue.append(message)
        self._backlog += len(message.payload) + 10
        if self._backlog > MAX_BACKLOG:
            self._shed()

    def flush(self) -> None:
        """Write what is queued, as far as the socket takes it now; the rest is the task's."""
        self.scheduled = False
        if self.closed or not self._queue:
            return
        if self._raw is None or not self._writable_now():
            self._wake.set()
            return
        if self._write_some() and (self._queue or self._head is not None):
            self._wake.set()

    # --- internals ---------------------------------------------------------------------

    def _writable_now(self) -> bool:
        return (
            self._head is None
            and not self._hypercorn_writing
            and not self._hypercorn_waiting
            and self.accepted
        )

    def _write_some(self) -> bool:
        """One write of the head and what is queued. False when the connection is gone."""
        assert self._raw is not None
        fd = self._raw.socket.fileno()
        if fd < 0:  # hypercorn closed it: the number may already be another socket's
            self.end()
            return False
        if self._head is not None:
            chunks: list[bytes | memoryview] = [self._head]
        else:
            chunks = []
        chunks.extend(m.frame for m in self._queue)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            self.end()
            return False
        if written == 0 and self._head is None:
            # Make the first frame the head even so: only a head is waited on (by the
            # task, for writability), and hypercorn never writes while there is one, so
            # the two never wait on the socket at once.
            self._head = memoryview(self._queue.popleft().frame)
        self._consume(written)
        return True

    def _consume(self, written: int) -> None:
        """Forget the first `written` bytes of the head and the queue."""
        if self._head is not None:
            taken = min(written, len(self._head))
            written -= taken
            self._head = self._head[taken:] if taken < len(self._head) else None
            if self._head is not None:
                self._recount()
                return
        while self._queue and written > 0:
            frame_bytes = self._queue[0].frame
            if written >= len(frame_bytes):
                written -= len(frame_bytes)
                self._queue.popleft()
            else:
                self._queue.popleft()
                self._head = memoryview(frame_bytes)[written:]
                written = 0
        self._recount()

    def _recount(self) -> None:
        self._backlog = (0 if self._head is None else len(self._head)) + sum(
            len(m.payload) + 10 for m in self._queue
        )
        if self._head is None:
            self._signal()

    def _signal(self) -> None:
        """Wake `aclose` when nothing waits any more, `_Gate` when no frame is half
        written."""
        if self._head_written is not None and (self._head is None or self.closed):
            self._head_written.set()
            self._head_written = None
        if self._drained is not None and (self.closed or not self._queue):
            self._drained.set()
            self._drained = None

    async def _write_raw(self) -> None:
        assert self._raw is not None
        while not self.closed and (self._queue or self._head is not None):
            if self._hypercorn_writing or (self._hypercorn_waiting and self._head is None):
                return  # _Gate wakes us when hypercorn is done
            if not self._write_some():
                return
            if self._queue or self._head is not None:
                try:
                    await trio.lowlevel.wait_writable(self._raw.socket)
                except (trio.ClosedResourceError, OSError):
                    self.end()
                    return

    async def _write_asgi(self) -> None:
        while self._queue and not self.closed:
            message = self._queue.popleft()
            self._recount()
            try:
                await self._send(message.asgi())
            except Exception:
                self.end()  # the connection is gone
                return
        self._recount()

    def _shed(self) -> None:
        """Too much waits: keep only the last message of each key; if that is still too
        much, stop writing and say so."""
        last: dict[str, Message] = {}
        for message in self._queue:
            if message.key is not None:
                last[message.key] = message
        if last:
            self._queue = deque(m for m in self._queue if m.key is None or last[m.key] is m)
            self._recount()
        if self._backlog <= MAX_BACKLOG:
            return
        self.overflowed = True
        self.end()
        if self._raw is not None and self._raw.socket.fileno() >= 0:
            # Cut the connection: a close frame would wait behind what the client does
            # not read, and a frame may be half written.
            try:
                self._raw.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.on_overflow is not None:
            self.on_overflow()

    def _drop(self) -> None:
        self._queue.clear()
        self._head = None
        self._backlog = 0

    # --- _Gate's side ------------------------------------------------------------------

    async def _hypercorn_turn(self) -> None:
        """Wait until no frame is half written (the writer finishes it and then starts no
        other), then keep the outlet from writing until `_hypercorn_done`."""
        self._hypercorn_waiting += 1
        try:
            while self._head is not None and not self.closed:
                self._head_written = written = self._head_written or trio.Event()
                self._wake.set()
                await written.wait()
        finally:
            self._hypercorn_waiting -= 1
        self._hypercorn_writing = True

    def _hypercorn_done(self) -> None:
        self._hypercorn_writing = False
        if self._queue or self._head is not None:
            self._wake.set()


class _Gate:
    """Stands in for hypercorn's per-connection send lock (`async with` is all hypercorn
    does with it): its writes wait for the outlet's half-written frame, and the outlet
    writes nothing while one of hypercorn's is under way."""

    def __init__(self, outlet: Outlet) -> None:
        self._lock = trio.Lock()  # among hypercorn's writers, as the lock it replaces
        self._outlet = outlet

    def locked(self) -> bool:
        return self._lock.locked()

    def statistics(self) -> trio.LockStatistics:
        return self._lock.statistics()

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            await self._outlet._hypercorn_turn()
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, *_exc: object) -> None:
        self._outlet._hypercorn_done()
        self._lock.release()
