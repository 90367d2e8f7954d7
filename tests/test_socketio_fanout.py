"""The Socket.IO fan-out (api/socketio_fanout.py, api/ws_outlet.py) over real sockets:
the broadcaster, the Socket.IO server and hypercorn on a loopback port, python-socketio
clients (websocket and polling) and a hand-made websocket client that stops reading."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
import trio_asyncio
from hypercorn.config import Config
from hypercorn.trio import serve
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from api.asgi import dispatcher
from api.auth import issue_token
from api.socketio_pacing import StatsPacer
from api.socketio_server import SocketStream, coalesce_stats
from api.ws_outlet import MAX_BACKLOG, Outlet
from api.ws_outlet import Message as OutletMessage
from engine.actors import broadcaster as broadcaster_actor
from engine.actors.broadcaster import Broadcaster
from engine.events import (
    CampaignCancelled,
    CampaignFailed,
    CampaignProgress,
    CampaignStarted,
    CampaignStatsChanged,
)
from engine.messages import CampaignEvent
from tests.test_api_socketio import Watcher, disconnect

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

SECRET = "fanout-secret"
USER, OTHER = "user-a", "user-b"


async def not_found(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@dataclass
class Stack:
    broadcaster: Broadcaster
    sockets: SocketStream
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def publish(self, owner: str, event: Any) -> None:
        self.broadcaster.publish(CampaignEvent(owner, event))


@pytest.fixture
async def stack(aio_loop: object) -> AsyncIterator[Stack]:
    async with trio.open_nursery() as nursery:
        broadcaster: Broadcaster = await nursery.start(partial(broadcaster_actor.run))
        sockets = SocketStream(SECRET)
        await nursery.start(sockets.forward_events, broadcaster)
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        asgi: Any = dispatcher(not_found, sockets.asgi)
        binds: list[str] = await nursery.start(
            partial(serve, asgi, config, mode="asgi", shutdown_trigger=trio.sleep_forever)
        )
        yield Stack(broadcaster, sockets, int(binds[0].rsplit(":", 1)[1]))
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def clients(
    stack: Stack, count: int, user: str = USER, transports: list[str] | None = None
) -> AsyncIterator[list[Watcher]]:
    watchers = [Watcher() for _ in range(count)]
    try:
        for watcher in watchers:
            await trio_asyncio.aio_as_trio(watcher.client.connect)(
                stack.url,
                transports=transports or ["websocket"],
                auth={"token": issue_token(SECRET, user, 3600)},
            )
        yield watchers
    finally:
        for watcher in watchers:
            if watcher.client.connected:
                await disconnect(watcher.client)


def progress(campaign: str, processed: int) -> CampaignProgress:
    return CampaignProgress(
        campaign_id=campaign,
        progress=processed / 10,
        processed_count=processed,
        total_recipients=1000,
        sent_count=processed,
        failed_count=0,
    )


def stats(campaign: str, sent: int) -> CampaignStatsChanged:
    return CampaignStatsChanged(campaign_id=campaign, stats={"sent": sent}, metrics={})


async def take(watcher: Watcher, count: int) -> list[tuple[str, Any]]:
    while len(watcher.received) < count:
        watcher.received.append(await watcher.events.receive())
    return watcher.received


async def test_every_socket_gets_each_event_once_and_in_order(stack: Stack) -> None:
    with trio.fail_after(60):
        async with (
            clients(stack, 25) as websockets,
            clients(stack, 1, transports=["polling"]) as polling,
            clients(stack, 1, user=OTHER) as stranger,
        ):
            expected: list[tuple[str, Any]] = []
            last_stats: list[Any] = []
            for burst in range(6):
                # One burst is published in one step, as a campaign's batch of outcomes is:
                # each burst's earlier stats are superseded by its last one.
                for k in range(1, 11):
                    processed = burst * 100 + k * 10
                    stack.publish(USER, progress("c1", processed))
                    stack.publish(USER, stats("c1", processed))
                    expected.append(("campaign:progress", processed))
                last_stats.append(burst * 100 + 100)
                await trio.sleep(0.05)
            # A lifecycle event of the campaign ends the stream: a held stats goes before it.
            stack.publish(USER, CampaignCancelled(campaign_id="c1", cancelled_at=None))
            stack.publish(OTHER, CampaignStarted(campaign_id="own", name="n", total_recipients=1,
                                                 started_at=None))  # fmt: skip
            for watcher in [*websockets, *polling]:
                while not watcher.received or watcher.received[-1][0] != "campaign:cancelled":
                    watcher.received.append(await watcher.events.receive())
                seen = [
                    (name, data["processedCount"])
                    for name, data in watcher.received
                    if name == "campaign:progress"
                ]
                assert seen == expected  # each once, in order
                sent = [data["stats"]["sent"] for name, data in watcher.received
                        if name == "campaign:stats"]  # fmt: skip
                # Only the last stats of a batch, paced: one per burst at most, the last kept.
                assert sent and set(sent) <= set(last_stats) and sent == sorted(sent)
                assert sent[-1] == last_stats[-1]
                # Every stats arrives after the progress of its own count.
                names = [(name, d.get("processedCount") or d.get("stats", {}).get("sent"))
                         for name, d in watcher.received]  # fmt: skip
                for value in sent:
                    assert names.index(("campaign:progress", value)) < names.index(
                        ("campaign:stats", value)
                    )
            assert [n for n, _ in await take(stranger[0], 1)] == ["campaign:started"]
            # The websockets were written to directly, not through engine.io's queues.
            assert stack.sockets.fanout.direct > 20 * 25


class RawClient:
    """A websocket Socket.IO client on wsproto that can stop reading."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.extensions: list[Any] = []

    async def events(self) -> AsyncIterator[Any]:
        while True:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                yield event
            if not data:
                return

    async def text(self) -> str:
        parts = []
        async for event in self.events():
            if isinstance(event, AcceptConnection):
                self.extensions = event.extensions
            elif isinstance(event, Message):
                parts.append(str(event.data))
                if event.message_finished:
                    return "".join(parts)
        raise AssertionError("closed")

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))


async def raw_client(stack: Stack, token: str) -> RawClient:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
    await sock.connect(("127.0.0.1", stack.port))
    client = RawClient(trio.SocketStream(sock))
    request = Request(
        host=f"127.0.0.1:{stack.port}",
        target="/socket.io/?EIO=4&transport=websocket",
        extensions=[PerMessageDeflate()],
    )
    await client.stream.send_all(client.ws.send(request))
    opened = await client.text()
    assert opened.startswith("0{")
    await client.send_text("40" + json.dumps({"token": token}))
    assert (await client.text()).startswith("40{")
    return client


async def test_a_slow_socket_is_cut_and_does_not_delay_the_others(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    big = "x" * 65536
    with trio.fail_after(90):
        async with clients(stack, 3) as readers:
            slow = await raw_client(stack, issue_token(SECRET, USER, 3600))
            # Compression is declined: frames are built once for every socket.
            assert slow.extensions == []
            assert stack.sockets.clients == 4
            count = 160  # ~10 MB per socket: beyond the kernel's buffers and the backlog
            for index in range(count):
                stack.publish(USER, CampaignFailed(campaign_id=f"c{index}", error=big,
                                                   failed_at=None))  # fmt: skip
                # The readers keep up with each event; the slow socket reads nothing.
                for reader in readers:
                    await take(reader, index + 1)
            for reader in readers:
                got = [d["campaignId"] for _, d in reader.received]
                assert got == [f"c{i}" for i in range(count)]
            # The slow socket was cut (and told so by the cut): it got what the kernel
            # held, then the end of the connection.
            received = 0
            try:
                async for event in slow.events():
                    if isinstance(event, Message) and event.message_finished:
                        received += 1
                    if isinstance(event, CloseConnection):
                        break
            except trio.BrokenResourceError:
                pass
            assert received < count
            assert any("client too slow" in r.getMessage() for r in caplog.records)


def test_coalescing_keeps_the_last_stats_of_each_campaign() -> None:
    items = [
        CampaignEvent(USER, stats("a", 1)),
        CampaignEvent(USER, progress("a", 1)),
        CampaignEvent(USER, stats("b", 1)),
        CampaignEvent(USER, stats("a", 2)),
        CampaignEvent(USER, progress("a", 2)),
        CampaignEvent(USER, stats("a", 3)),
    ]
    kept = coalesce_stats(items)
    assert kept == [items[1], items[2], items[4], items[5]]


def test_stats_are_paced_per_campaign_and_the_last_always_goes() -> None:
    pacer = StatsPacer(interval=0.25)

    def at(event: Any) -> CampaignEvent:
        return CampaignEvent(USER, event)

    first, second, third = at(stats("a", 1)), at(stats("a", 2)), at(stats("a", 3))
    other = at(stats("b", 1))
    step = at(progress("a", 2))
    assert pacer.admit([first, other], now=10.0) == [first, other]  # the first at once
    assert pacer.admit([second, step], now=10.1) == [step]  # progress is never held
    assert pacer.due == 10.25
    assert pacer.admit([third], now=10.2) == []  # the last replaces the one held
    assert pacer.release(now=10.24) == []
    assert pacer.release(now=10.25) == [third]
    assert pacer.due is None
    # A lifecycle event of the campaign sends its held stats first.
    fourth, done = at(stats("a", 4)), at(CampaignCancelled(campaign_id="a", cancelled_at=None))
    assert pacer.admit([fourth], now=10.3) == []
    assert pacer.admit([done], now=10.31) == [fourth, done]
    # ...and the campaign's next stats goes at once.
    fifth = at(stats("a", 5))
    assert pacer.admit([fifth], now=10.32) == [fifth]


async def test_a_backlog_sheds_superseded_messages_first() -> None:
    sent: list[str] = []
    release = trio.Event()

    async def stuck_send(message: MutableMapping[str, Any]) -> None:
        await release.wait()
        sent.append(message.get("text", "closed"))

    overflowed: list[bool] = []
    outlet = Outlet(stuck_send, on_overflow=lambda: overflowed.append(True))
    async with trio.open_nursery() as nursery:
        await nursery.start(outlet.run)
        chunk = "4" + "y" * 60_000
        for index in range(60):  # 3.6 MB of one key, and one message that must arrive
            outlet.put(OutletMessage(f"{chunk}{index}".encode(), key="stats:a"))
            if index == 20:
                outlet.put(OutletMessage(b"4must"))
        outlet.flush()
        assert not overflowed and outlet.backlog <= MAX_BACKLOG
        release.set()
        with trio.fail_after(10):
            await outlet.aclose({"type": "websocket.close"})  # once all is written
        assert sent[-1] == "closed" and sent.count("4must") == 1
        numbers = [int(text[len(chunk) :]) for text in sent[:-1] if text != "4must"]
        assert numbers == sorted(numbers) and len(numbers) < 60 and numbers[-1] == 59
        # Messages that must all arrive are never shed: too many of them cut the socket.
        outlet = Outlet(stuck_send, on_overflow=lambda: overflowed.append(True))
        for _ in range(40):
            outlet.put(OutletMessage(chunk.encode()))
        assert overflowed == [True] and outlet.closed and outlet.backlog == 0
