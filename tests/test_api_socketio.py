"""The Socket.IO stream over real sockets: python-socketio clients (websocket and
polling) inside the test's trio-asyncio loop watch a campaign driven over HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
import socketio
import trio
import trio_asyncio

from tests.api_helpers import OTHER_USER, SECRET, USER, Harness, api, gateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

Event = tuple[str, Any]


class Watcher:
    """A Socket.IO client whose events land in a trio channel."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self._send, self.events = trio.open_memory_channel[Event](10_000)
        self.received: list[Event] = []

        @self.client.on("*")  # type: ignore[misc]
        def any_event(name: str, data: Any) -> None:
            self._send.send_nowait((name, data))

    async def next(self, name: str) -> Any:
        """Wait for the next event called `name` (keeping every event seen)."""
        async for event in self.events:
            self.received.append(event)
            if event[0] == name:
                return event[1]
        raise AssertionError("stream closed")


@asynccontextmanager
async def watching(
    api: Harness, *, transports: list[str] | None = None, **connect: Any
) -> AsyncIterator[Watcher]:
    watcher = Watcher()
    await trio_asyncio.aio_as_trio(watcher.client.connect)(
        api.base_url, transports=transports or ["websocket"], socketio_path="socket.io", **connect
    )
    try:
        yield watcher
    finally:
        await disconnect(watcher.client)


async def disconnect(client: socketio.AsyncClient) -> None:
    # Without abort, python-engineio's polling client waits for its pending long
    # poll, which the server holds until the next ping (25 s).
    await trio_asyncio.aio_as_trio(client.eio.disconnect)(abort=True)


def names(events: list[Event]) -> list[str]:
    return [name for name, _ in events]


async def test_socket_clients_watch_a_campaign(api: Harness) -> None:
    with trio.fail_after(60):
        account = await api.make_account()
        await api.make_contacts(12)
        campaign = await api.make_campaign(account)
        key = campaign["id"]
        async with (
            watching(api, auth={"token": api.token(USER)}) as websocket,
            watching(api, auth={"token": api.token(USER)}, transports=["polling"]) as polling,
            watching(api, auth={"token": api.token(OTHER_USER)}) as stranger,
        ):
            metrics = (await api.request("GET", "/metrics", user=None)).body.decode()
            assert "campaign_engine_socketio_clients 3.0" in metrics

            api.gateway.block_after(6)
            await api.request("POST", f"/api/v1/campaigns/{key}/start")
            for watcher in (websocket, polling):
                started = await watcher.next("campaign:started")
                assert set(started) == {"campaignId", "name", "totalRecipients", "startedAt"}
                assert (started["campaignId"], started["totalRecipients"]) == (key, 12)
            await api.gateway.wait_held(1)
            await api.request("POST", f"/api/v1/campaigns/{key}/pause")
            api.gateway.release()
            for watcher in (websocket, polling):
                paused = await watcher.next("campaign:paused")
                assert set(paused) == {
                    "campaignId",
                    "processedCount",
                    "totalRecipients",
                    "pausedAt",
                    "reason",
                }
                assert paused["campaignId"] == key and paused["totalRecipients"] == 12
            await api.request("POST", f"/api/v1/campaigns/{key}/resume")
            for watcher in (websocket, polling):
                assert await watcher.next("campaign:resumed") == {"campaignId": key}
                completed = await watcher.next("campaign:completed")
                assert set(completed) == {"campaignId", "campaign", "completedAt"}
                assert completed["campaign"]["status"] == "completed"
                assert completed["campaign"]["stats"]["sent"] == 12
                assert completed["campaign"]["progress"] == 100

            for watcher in (websocket, polling):
                seen = names(watcher.received)
                order = [seen.index(n) for n in ("campaign:started", "campaign:paused")]
                order += [seen.index("campaign:resumed"), seen.index("campaign:completed")]
                assert order == sorted(order), seen
                progress = [d for n, d in watcher.received if n == "campaign:progress"]
                assert progress, seen
                assert set(progress[-1]) == {
                    "campaignId",
                    "progress",
                    "processedCount",
                    "totalRecipients",
                    "sentCount",
                    "failedCount",
                }
                assert progress[-1]["processedCount"] == 12 and progress[-1]["progress"] == 100
                stats = [d for n, d in watcher.received if n == "campaign:stats"]
                assert stats and set(stats[-1]) == {"campaignId", "stats", "metrics"}
                assert set(stats[-1]["metrics"]) == {
                    "delivery_rate",
                    "read_rate",
                    "reply_rate",
                    "failure_rate",
                    "click_rate",
                }
            # Both transports saw the same stream.
            assert names(websocket.received) == names(polling.received)

            # The other user's socket heard nothing of it. Events to one server go out
            # in order, so an event of its own published now arrives after any stray one.
            other_account = await api.make_account(user=OTHER_USER)
            other = await api.make_campaign(other_account, user=OTHER_USER)
            await api.request("POST", f"/api/v1/campaigns/{other['id']}/cancel", user=OTHER_USER)
            cancelled = await stranger.next("campaign:cancelled")
            assert cancelled["campaignId"] == other["id"]
            assert names(stranger.received) == ["campaign:cancelled"]


async def test_handshake_authentication(api: Harness) -> None:
    with trio.fail_after(30):
        for connect in (
            {},
            {"auth": {"token": "garbage"}},
            {"auth": {"token": api.token(ttl=None) + "x"}},
        ):
            client = socketio.AsyncClient(reconnection=False)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await trio_asyncio.aio_as_trio(client.connect)(
                    api.base_url, transports=["websocket"], **connect
                )
        # The header and the query string work too.
        async with watching(api, headers={"Authorization": f"Bearer {api.token()}"}) as by_header:
            assert by_header.client.connected
        client = socketio.AsyncClient(reconnection=False)
        await trio_asyncio.aio_as_trio(client.connect)(
            f"{api.base_url}?token={api.token()}", transports=["polling"]
        )
        assert client.connected
        await disconnect(client)


async def test_a_socket_is_disconnected_when_its_token_expires(api: Harness) -> None:
    with trio.fail_after(30):
        expires_at = int(time.time()) + 2
        token = jwt.encode({"sub": USER, "exp": expires_at}, SECRET, algorithm="HS256")
        disconnected = trio.Event()
        async with watching(api, auth={"token": token}) as short_lived:

            @short_lived.client.event  # type: ignore[misc]
            def disconnect(*_reason: Any) -> None:
                disconnected.set()

            async with watching(api, auth={"token": api.token(ttl=None)}) as lasting:
                assert short_lived.client.connected
                await disconnected.wait()
                # Cut by the server at `exp`, not before (the claim has whole seconds).
                assert time.time() >= expires_at
                assert lasting.client.connected
                metrics = (await api.request("GET", "/metrics", user=None)).body.decode()
                assert "campaign_engine_socketio_clients 1.0" in metrics
