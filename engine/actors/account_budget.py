"""Per-account sending budgets (`messagesPerSecond`), shared by every campaign
that sends through the account.

`LocalAccountBudget` serves one daemon. `SharedAccountBudget` serves several:
Redis hands each daemon disjoint time slices of the account's budget (one
round trip per slice of ~100 ms of sends, never one per message), and the
daemon spaces its sends evenly inside the slices it holds.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import trio

from engine.clock import WallClock
from engine.core.token_bucket import TokenBucket
from engine.transport.redis_link import RedisLink


class AccountBudget(Protocol):
    async def take(self, account_id: str, rate: float) -> None:
        """Wait until the account may send one more message."""

    async def slow_down(self, account_id: str, seconds: float) -> None:
        """WhatsApp said the account sends too fast: nobody sends for it for a while."""


class LocalAccountBudget:
    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._blocked_until: dict[str, float] = {}

    async def take(self, account_id: str, rate: float) -> None:
        while True:
            now = trio.current_time()
            blocked_until = self._blocked_until.get(account_id, 0.0)
            if blocked_until > now:
                await trio.sleep_until(blocked_until)
                continue
            bucket = self._buckets.get(account_id)
            if bucket is None:
                bucket = self._buckets[account_id] = TokenBucket.paced(rate, now=now)
            elif bucket.rate_per_second != rate:
                bucket.set_rate(rate, now)
            if bucket.take(now):
                return
            await trio.sleep(bucket.seconds_until_available(now))

    async def slow_down(self, account_id: str, seconds: float) -> None:
        until = trio.current_time() + seconds
        self._blocked_until[account_id] = max(self._blocked_until.get(account_id, 0.0), until)


class _Slots:
    def __init__(self) -> None:
        self.times: deque[float] = deque()  # trio times of the slots this daemon holds
        self.fetching = trio.Lock()


class SharedAccountBudget:
    def __init__(self, redis: RedisLink, clock: WallClock, *, slice_seconds: float = 0.1) -> None:
        self._redis = redis
        self._clock = clock
        self._slice_seconds = slice_seconds
        self._accounts: dict[str, _Slots] = {}

    async def take(self, account_id: str, rate: float) -> None:
        slots = self._accounts.setdefault(account_id, _Slots())
        while True:
            self._drop_missed(slots, rate)
            if slots.times:
                await trio.sleep_until(slots.times.popleft())
                return
            async with slots.fetching:
                if not slots.times:  # another sender may have fetched meanwhile
                    await self._fetch(account_id, rate, slots)

    async def slow_down(self, account_id: str, seconds: float) -> None:
        now = self._clock.now().timestamp()
        await self._redis.slow_account(account_id, until=now + seconds, now=now)
        self._accounts.pop(account_id, None)  # slots held now would ignore the slow-down

    async def _fetch(self, account_id: str, rate: float, slots: _Slots) -> None:
        count = max(1, math.ceil(rate * self._slice_seconds))
        wall_now = self._clock.now()
        start = await self._redis.reserve_slice(
            account_id, rate=rate, count=count, now=wall_now.timestamp()
        )
        # Map the slice to trio time from the request's own instant, so the
        # slots keep their absolute places however long the round trip took.
        trio_start = self._clock.trio_time_at(wall_now) + (start - wall_now.timestamp())
        slots.times.extend(trio_start + i / rate for i in range(count))

    @staticmethod
    def _drop_missed(slots: _Slots, rate: float) -> None:
        # A slot nobody used in time is lost: using it late would bunch sends.
        horizon = trio.current_time() - 1 / rate
        while slots.times and slots.times[0] < horizon:
            slots.times.popleft()
