"""Many Socket.IO clients of one user in the benchmark's process, cheap enough to
measure the daemon rather than themselves.

python-socketio's client costs ~110 µs of CPU per event received, ~200 µs with the
benchmark's bookkeeping: 1,000 of them watching a campaign at 1,000 msg/s need more
than a core, on the machine the daemon runs on, and their own lag hides the
daemon's. These speak the protocol directly (Engine.IO 4 over a websocket, Socket.IO
5 packets: open `0{..}`, connect `40{auth}` → `40{sid}`, ping `2` → pong `3`, event
`42[name, payload]`) and decode only the fields the figures need.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec

WATCHED = ("campaign:progress", "campaign:stats", "campaign:completed")


class _Stats(msgspec.Struct):
    sent: int = 0
    failed: int = 0


class _Payload(msgspec.Struct, rename="camel"):
    campaign_id: str | None = None
    processed_count: int | None = None
    stats: _Stats | None = None


_decode_event = msgspec.json.Decoder(tuple[str, _Payload]).decode


class Arrival(msgspec.Struct, frozen=True):
    at: float  # wall clock, time.time()
    client: int
    name: str
    campaign_id: str | None
    processed: int | None  # what a progress or stats event reports as processed


def arrival(at: float, client: int, name: str, payload: _Payload) -> Arrival:
    processed = payload.processed_count
    if name == "campaign:stats" and payload.stats is not None:
        processed = payload.stats.sent + payload.stats.failed
    return Arrival(at, client, name, payload.campaign_id, processed)


class RawSwarm:
    """`size` websocket clients of one user, recording every watched event."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.arrivals: list[Arrival] = []
        self._completed: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.dropped = 0  # clients whose connection ended before close()
        self._closing = False

    async def connect(self, url: str, token: str, at_once: int = 50) -> float:
        started = time.perf_counter()
        # No connection limit: each client holds its websocket for the whole run.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        target = f"{url.rstrip('/')}/socket.io/?EIO=4&transport=websocket"
        auth = msgspec.json.encode({"token": token}).decode()
        for start in range(0, self.size, at_once):
            batch = range(start, min(start + at_once, self.size))
            sockets = await asyncio.gather(*(self._open(target, auth) for _ in batch))
            for index, ws in zip(batch, sockets, strict=True):
                self._sockets.append(ws)
                self._readers.append(asyncio.create_task(self._read(index, ws)))
        return time.perf_counter() - started

    async def _open(self, target: str, auth: str) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        ws = await self._session.ws_connect(target, autoping=True, compress=0)
        opened = await ws.receive_str(timeout=30)
        if not opened.startswith("0"):
            raise RuntimeError(f"not an Engine.IO open packet: {opened[:80]!r}")
        await ws.send_str("40" + auth)
        while True:
            answer = await ws.receive_str(timeout=30)
            if answer.startswith("40"):
                return ws
            if answer == "2":
                await ws.send_str("3")
                continue
            raise RuntimeError(f"connect refused: {answer[:200]!r}")

    async def _read(self, index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data: str = message.data
            if data.startswith("42"):
                at = time.time()
                name, payload = _decode_event(data[2:])
                if name not in WATCHED:
                    continue
                self.arrivals.append(arrival(at, index, name, payload))
                if name == "campaign:completed" and payload.campaign_id is not None:
                    key = payload.campaign_id
                    self._completed[key] = self._completed.get(key, 0) + 1
            elif data == "2":
                await ws.send_str("3")
        if not self._closing:
            self.dropped += 1

    def completed(self, campaign_id: str) -> int:
        return self._completed.get(campaign_id, 0)

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(ws.close() for ws in self._sockets), return_exceptions=True)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
