"""The Socket.IO stream (docs/socketio-events.md), and the door to python-socketio
(with api/socketio_fanout.py, its client manager and websocket).

python-socketio is an asyncio library: it runs in the trio-asyncio loop. Each
socket is authenticated at the handshake and joins its user's room; campaign
events come from the engine's broadcaster (trio) and cross into asyncio once
per batch: the events waiting when the forwarder wakes, `campaign:stats`
coalesced to the last of each campaign and paced (api/socketio_pacing.py).
Each event is encoded once for all the sockets of its room
(api/socketio_fanout.py). With Redis configured the server's client manager
publishes through Redis, so a socket connected to any daemon receives events
produced by any other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import socketio
import trio
import trio_asyncio

from api.auth import InvalidToken, bearer, verify_token
from api.socketio_fanout import (
    Fanout,
    FanoutManager,
    FanoutRedisManager,
    OutletWebSocket,
    cap_polling,
)
from api.socketio_pacing import StatsPacer, coalesce_stats
from engine.events import CampaignStatsChanged, encode
from engine.messages import CampaignEvent, Lagged
from engine.service import Broadcaster

log = logging.getLogger(__name__)

SOCKETIO_PATH = "socket.io"
MAX_BATCH = 1000  # events taken at once by the forwarder


def stats_key(event: str, args: list[Any]) -> str | None:
    """Within a socket's backlog, a `campaign:stats` is superseded by its campaign's next."""
    if event == CampaignStatsChanged.NAME and args and isinstance(args[0], dict):
        campaign = args[0].get("campaignId")
        return f"stats:{campaign}" if isinstance(campaign, str) else None
    return None


def room_for(user_id: str) -> str:
    return f"user:{user_id}"


def handshake_token(environ: Mapping[str, Any], auth: Any) -> str | None:
    """`auth: {token}` (v4 clients), else `Authorization: Bearer`, else `?token=`."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return str(auth["token"])
    header = bearer(environ.get("HTTP_AUTHORIZATION"))
    if header:
        return header
    tokens = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return tokens[0] if tokens else None


class SocketStream:
    """The Socket.IO server; its `asgi` app is mounted at `/socket.io/`."""

    def __init__(self, jwt_secret: str | None, redis_url: str | None = None) -> None:
        self._secret = jwt_secret
        self._distributed = redis_url is not None
        self.fanout = Fanout()
        manager = FanoutRedisManager(redis_url) if redis_url else FanoutManager()
        manager.use(self.fanout, stats_key)
        self.server = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=manager,
            # Bearer tokens, not cookies, authenticate: any origin may connect.
            cors_allowed_origins="*",
            logger=False,
            engineio_logger=False,
        )
        self.server.on("connect", self._connect)
        self.server.on("disconnect", self._disconnect)
        eio = self.server.eio
        eio._async = {**eio._async, "websocket": partial(OutletWebSocket, fanout=self.fanout)}
        self.fanout.on_overflow = self._overflowed
        self.asgi = socketio.ASGIApp(self.server, socketio_path=SOCKETIO_PATH)
        self._sockets: set[str] = set()
        # A socket lives no longer than its token: closed at `exp`.
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def clients(self) -> int:
        """Sockets connected (and authenticated) to this daemon."""
        return len(self._sockets)

    # --- asyncio side: handlers called by python-socketio ------------------------------

    async def _connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        try:
            token = verify_token(self._secret, handshake_token(environ, auth))
        except InvalidToken as error:
            raise socketio.exceptions.ConnectionRefusedError(str(error)) from None
        await self.server.enter_room(sid, room_for(token.user_id))
        eio_socket = self.server.eio.sockets.get(self.server.manager.eio_sid_from_sid(sid, "/"))
        if eio_socket is not None:
            cap_polling(eio_socket)
        self._sockets.add(sid)
        if token.expires_at is not None:
            delay = max(0.0, token.expires_at - time.time())
            self._expiries[sid] = asyncio.get_running_loop().call_later(delay, self._expire, sid)

    def _expire(self, sid: str) -> None:
        self._expiries.pop(sid, None)
        task = asyncio.get_running_loop().create_task(self.server.disconnect(sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _overflowed(self, eio_sid: str) -> None:
        # Too slow to keep up: cut, so that it reconnects and reloads (as on any reconnect).
        sid = self.server.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is not None:
            self._expire(sid)

    async def _disconnect(self, sid: str, *_reason: Any) -> None:
        self._sockets.discard(sid)
        expiry = self._expiries.pop(sid, None)
        if expiry is not None:
            expiry.cancel()

    async def _start_client_manager(self) -> None:
        if not self.server.manager_initialized:
            self.server.manager_initialized = True
            self.server.manager.initialize()

    # --- trio side ---------------------------------------------------------------------

    async def forward_events(
        self,
        broadcaster: Broadcaster,
        *,
        max_queue: int = 10_000,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Emit every campaign event to its owner's room, until cancelled."""
        emit = trio_asyncio.aio_as_trio(self._emit_all)
        if self._distributed:
            # Listen to the other daemons now, not at the first connection.
            await trio_asyncio.aio_as_trio(self._start_client_manager)()
        pacer = StatsPacer()
        async with broadcaster.subscribe(max_queue) as events:
            task_status.started()
            while True:
                batch: list[CampaignEvent | Lagged] = []
                due = pacer.due
                with trio.move_on_at(due if due is not None else math.inf):
                    batch.append(await events.receive())
                while batch and len(batch) < MAX_BATCH:
                    try:
                        batch.append(events.receive_nowait())
                    except trio.WouldBlock:
                        break
                dropped = sum(item.dropped for item in batch if isinstance(item, Lagged))
                if dropped:
                    log.warning("socket.io stream fell behind; %d events dropped", dropped)
                fresh = coalesce_stats([i for i in batch if isinstance(i, CampaignEvent)])
                ready = pacer.admit(fresh, trio.current_time())
                if not ready or (not self._sockets and not self._distributed):
                    continue  # nobody here to tell, and no other daemon to tell either
                await emit(ready)

    async def _emit_all(self, events: Sequence[CampaignEvent]) -> None:
        for item in events:
            name, payload = encode(item.event)
            await self.server.emit(name, payload, room=room_for(item.owner_id))
