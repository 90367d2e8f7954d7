"""Fans campaign events out to subscribers (Socket.IO, `watch`, tests).

Publishing never blocks: a campaign must not slow down because a dashboard is
slow. Each subscriber has a bounded queue; when it is full the subscriber loses
events and, once it catches up, receives one `Lagged` saying how many.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import trio

from engine.messages import CampaignEvent, Lagged

log = logging.getLogger(__name__)


class BroadcasterStatistics(msgspec.Struct, frozen=True):
    subscribers: int
    published: int
    dropped_at_inbox: int
    dropped_for_subscribers: int


class _Subscriber:
    def __init__(self, send: trio.MemorySendChannel[CampaignEvent | Lagged]) -> None:
        self.send = send
        self.dropped = 0


class Broadcaster:
    """Handle returned by `run`; safe to share between tasks."""

    def __init__(self, inbox: trio.MemorySendChannel[CampaignEvent]) -> None:
        self._inbox = inbox
        self._subscribers: dict[int, _Subscriber] = {}
        self._ids = itertools.count()
        self._published = 0
        self._dropped_at_inbox = 0
        self._dropped_for_subscribers = 0

    def publish(self, event: CampaignEvent) -> None:
        try:
            self._inbox.send_nowait(event)
            self._published += 1
        except trio.WouldBlock:
            self._dropped_at_inbox += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # shutting down

    @asynccontextmanager
    async def subscribe(
        self, max_queue: int = 1000
    ) -> AsyncIterator[trio.MemoryReceiveChannel[CampaignEvent | Lagged]]:
        send, receive = trio.open_memory_channel[CampaignEvent | Lagged](max_queue)
        key = next(self._ids)
        self._subscribers[key] = _Subscriber(send)
        try:
            async with receive:
                yield receive
        finally:
            del self._subscribers[key]
            send.close()

    def statistics(self) -> BroadcasterStatistics:
        return BroadcasterStatistics(
            subscribers=len(self._subscribers),
            published=self._published,
            dropped_at_inbox=self._dropped_at_inbox,
            dropped_for_subscribers=self._dropped_for_subscribers,
        )

    def _deliver(self, event: CampaignEvent) -> None:
        for subscriber in list(self._subscribers.values()):
            try:
                if subscriber.dropped:
                    subscriber.send.send_nowait(Lagged(subscriber.dropped))
                    subscriber.dropped = 0
                subscriber.send.send_nowait(event)
            except trio.WouldBlock:
                subscriber.dropped += 1
                self._dropped_for_subscribers += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass


async def run(
    *,
    inbox_size: int = 10_000,
    task_status: trio.TaskStatus[Broadcaster] = trio.TASK_STATUS_IGNORED,
) -> None:
    send, receive = trio.open_memory_channel[CampaignEvent](inbox_size)
    broadcaster = Broadcaster(send)
    async with receive:
        task_status.started(broadcaster)
        async for event in receive:
            broadcaster._deliver(event)
            # Everything published meanwhile, in the same step: a subscriber that wakes
            # then takes the whole burst at once (the Socket.IO forwarder batches it).
            while True:
                try:
                    broadcaster._deliver(receive.receive_nowait())
                except trio.WouldBlock:
                    break
