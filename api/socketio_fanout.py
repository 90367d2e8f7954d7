"""Socket.IO events to every socket of a room, encoded once (docs/socketio-events.md).

python-socketio, for each socket and each event, creates an asyncio task, queues the packet
in the engine.io socket's queue, wakes that socket's writer task, and crosses into trio to
have hypercorn frame and write it. Here the client manager's local emit builds the event's
websocket frame once and queues it in each socket's outlet (api/ws_outlet.py); the outlets
are flushed at the end of the asyncio loop's turn, so the events of one turn leave in one
write per socket.

A socket's packets keep their order. Its engine.io packets (the Socket.IO CONNECT answer,
pings) go through engine.io's queue and writer task, and so do the events sent to it
before its outlet is *joined*: after the first event to a connected websocket socket, a
marker packet (`JOIN`) follows it in engine.io's queue; when engine.io's writer hands the
marker to the websocket, everything queued before it is in the outlet, and later events go
to the outlet directly. Polling sockets, and events with acknowledgement callbacks or
binary attachments, go python-socketio's way.

With Redis, python-socketio's pub/sub manager publishes each emit and delivers it here
through this same local emit, so the events of other daemons take the same path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import socketio
import trio_asyncio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi
from socketio import packet as sio_packet

from api.ws_outlet import OUTLET_KEY, Message, Outlet

log = logging.getLogger(__name__)


class _JoinMark(str):
    """The marker's text: an engine.io NOOP, recognised by identity."""


JOIN_TEXT = _JoinMark("6")


def _join_packet() -> Any:
    pkt = eio_packet.Packet(eio_packet.NOOP)
    pkt.encode_cache = JOIN_TEXT  # what engine.io's writer hands to the websocket
    return pkt


JOIN = _join_packet()


class _Link:
    __slots__ = ("joined", "joining", "outlet")

    def __init__(self, outlet: Outlet) -> None:
        self.outlet = outlet
        self.joining = False  # the marker is in engine.io's queue
        self.joined = False  # events go to the outlet


class Fanout:
    """This daemon's websocket outlets, by engine.io sid, and their flushing."""

    def __init__(self) -> None:
        self._links: dict[str, _Link] = {}
        self._due: list[Outlet] = []
        self.on_overflow: Callable[[str], None] | None = None  # engine.io sid
        # Deliveries so far: straight to an outlet, or through engine.io's queue.
        self.direct = 0
        self.queued = 0

    def attach(self, eio_sid: str, outlet: Outlet) -> None:
        self._links[eio_sid] = _Link(outlet)
        outlet.on_overflow = lambda: self._overflowed(eio_sid)

    def detach(self, eio_sid: str, outlet: Outlet) -> None:
        link = self._links.get(eio_sid)
        if link is not None and link.outlet is outlet:
            del self._links[eio_sid]

    def link(self, eio_sid: str) -> _Link | None:
        return self._links.get(eio_sid)

    def joined(self, eio_sid: str, outlet: Outlet) -> None:
        link = self._links.get(eio_sid)
        if link is not None and link.outlet is outlet:
            link.joined = True

    def stage(self, outlet: Outlet, message: Message) -> None:
        outlet.put(message)
        self.direct += 1
        if not outlet.scheduled:
            outlet.scheduled = True
            if not self._due:
                asyncio.get_running_loop().call_soon(self.flush)
            self._due.append(outlet)

    def flush(self) -> None:
        due, self._due = self._due, []
        for outlet in due:
            try:
                outlet.flush()
            except Exception:  # one broken connection must not stall the others
                log.exception("socket.io: a websocket write failed; closing it")
                outlet.scheduled = False
                outlet.end()

    def _overflowed(self, eio_sid: str) -> None:
        log.warning("socket.io client too slow (%s): disconnected, events dropped", eio_sid)
        if self.on_overflow is not None:
            self.on_overflow(eio_sid)


class OutletWebSocket(eio_asgi.WebSocket):  # type: ignore[misc]
    """engine.io's ASGI websocket, writing through the connection's outlet (api/asgi.py
    puts it in the scope); without one, engine.io's own."""

    def __init__(self, handler: Any, server: Any, *, fanout: Fanout) -> None:
        super().__init__(handler, server)
        self._fanout = fanout
        self._outlet: Outlet | None = None
        self._eio_sid = ""

    async def __call__(self, environ: Mapping[str, Any]) -> str:
        outlet = environ["asgi.scope"].get(OUTLET_KEY)
        if not isinstance(outlet, Outlet):
            return str(await super().__call__(environ))
        self._outlet = outlet
        self.asgi_receive = environ["asgi.receive"]
        self.asgi_send = environ["asgi.send"]
        await trio_asyncio.trio_as_aio(outlet.accept)({"type": "websocket.accept"})
        eio_sid = self._eio_sid = str(self.handler.__self__.sid)  # the socket it serves
        self._fanout.attach(eio_sid, outlet)
        try:
            await self.handler(self)
        finally:
            self._fanout.detach(eio_sid, outlet)
        return ""  # as engine.io's: no HTTP response

    async def send(self, message: str | bytes) -> None:
        outlet = self._outlet
        if outlet is None:
            await super().send(message)
        elif message is JOIN_TEXT:
            self._fanout.joined(self._eio_sid, outlet)
        else:
            outlet.put(Message.of(message))
            outlet.flush()

    async def close(self) -> None:
        if self._outlet is None:
            await super().close()
            return
        try:
            await trio_asyncio.trio_as_aio(self._outlet.aclose)({"type": "websocket.close"})
        except Exception:  # already closed: as engine.io's
            pass


POLL_PACKETS = 16  # python-engineio's client refuses a polling payload of more


def cap_polling(socket: Any) -> None:
    """Answer each long poll of this engine.io socket with at most `POLL_PACKETS`
    packets (the rest wait for the next poll, in order): events now reach its queue a
    batch at a time, and python-engineio's client aborts on a longer payload."""

    async def poll() -> list[Any]:
        queue = socket.queue
        try:
            first = await asyncio.wait_for(
                queue.get(), socket.server.ping_interval + socket.server.ping_timeout
            )
            queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise eio_exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while len(packets) < POLL_PACKETS:
            try:
                pkt = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            queue.task_done()
            if pkt is None:  # closing: leave it for the next poll, as engine.io does
                queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    socket.poll = poll


KeyOf = Callable[[str, list[Any]], str | None]


def _no_key(_event: str, _args: list[Any]) -> str | None:
    return None


class FanoutManager(socketio.AsyncManager):  # type: ignore[misc]
    """A client manager whose local emit to a room goes through `Fanout`.

    `key_of(event, args)`: the coalescing key of an event's message (ws_outlet.Message).
    """

    fanout: Fanout
    key_of: KeyOf = staticmethod(_no_key)

    def use(self, fanout: Fanout, key_of: KeyOf) -> None:
        self.fanout = fanout
        self.key_of = key_of

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or skip_sid is not None or not isinstance(room, str):
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            args = list(data)
        else:
            args = [] if data is None else [data]
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        if not isinstance(encoded, str):  # binary attachments
            await super().emit(event, data, namespace, room=room, **kwargs)
            return
        message = Message(("4" + encoded).encode(), key=self.key_of(event, args))
        await self._deliver(namespace, room, encoded, message)

    async def _deliver(self, namespace: str, room: str, encoded: str, message: Message) -> None:
        fanout, eio = self.fanout, self.server.eio
        queued: Any = None
        for sid, eio_sid in self.get_participants(namespace, room):
            link = fanout.link(eio_sid)
            if link is not None and link.joined:
                fanout.stage(link.outlet, message)
                continue
            if queued is None:
                queued = eio_packet.Packet(eio_packet.MESSAGE, encoded)
            fanout.queued += 1
            await eio.send_packet(eio_sid, queued)
            if link is None or link.joining or not self.is_connected(sid, namespace):
                continue  # not connected: its CONNECT answer may not be queued yet
            socket = eio.sockets.get(eio_sid)
            if socket is not None and socket.upgraded and not socket.closed:
                link.joining = True
                await eio.send_packet(eio_sid, JOIN)


class FanoutRedisManager(socketio.AsyncRedisManager, FanoutManager):  # type: ignore[misc]
    """Redis pub/sub between daemons; each daemon's local delivery through `Fanout`
    (python-socketio's pub/sub manager delivers locally through `FanoutManager.emit`,
    which comes after it in the method order)."""
