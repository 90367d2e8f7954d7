"""Per-number sending budgets (`messagesPerSecond`), shared by every campaign that
sends through the phone number, on every daemon.

WhatsApp limits a phone number: the budget is keyed by `phone_number_id`, so two
account rows naming one number share it. Its rate is the number's current one
(`AccountRates`, refreshed when an account changes), so a PATCH applies to
running campaigns at once; the rate a caller passes is only the fallback for a
number whose rate cannot be read.

The promise, measured where the requests arrive: no rolling second carries more
than `messagesPerSecond` requests. Turns are spaced `(1 + ARRIVAL_MARGIN_SECONDS)
/ rate` apart, so any `rate + 1` consecutive turns span more than a second by
that margin, which absorbs the jitter between writing a request at its turn and
its arrival (and a turn taken up to half the margin late).

`LocalAccountBudget` serves one daemon. `SharedAccountBudget` serves several:
Redis hands each daemon disjoint slices of turns, timed by Redis's own clock
(one round trip per slice of ~100 ms of turns, never one per message).

Redis down: fail closed. No daemon can know what the others are sending, so a
daemon without Redis sends nothing for its numbers until Redis answers again
(the recipients wait in `pending`); the wait is logged once, with its cause.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Protocol

import trio

from engine.store import account_rates
from engine.store.database import Database
from engine.store.errors import DatabaseUnavailable
from engine.transport.redis_link import RedisLink, RedisUnavailable

log = logging.getLogger(__name__)

# Half of it for a turn taken late (below), half for the jitter between writing a
# request and its arrival. 3% of the rate: a number at WhatsApp's top tier sends up
# to 970 a second. Measured at that rate on a loaded 2-core machine, 97% of sends
# were written within 10 ms of their turn; the 2% later than 15 ms took a new turn
# (engine/actors/sender_pool.py).
ARRIVAL_MARGIN_SECONDS = 0.03
# A turn taken later than this is dropped: taken late, it would bunch with the next.
LATE_TOLERANCE_SECONDS = ARRIVAL_MARGIN_SECONDS / 2
SLICE_SECONDS = 0.1
# After Redis lost its state: long enough for every turn handed out before to
# have been used (a slice, a late turn) and to have left the rolling second.
RESTART_HOLD_SECONDS = 1.0 + SLICE_SECONDS + 2 * ARRIVAL_MARGIN_SECONDS


def spacing(rate: float) -> float:
    """Seconds between two turns of a number sending `rate` messages per second."""
    return (1.0 + ARRIVAL_MARGIN_SECONDS) / rate


class AccountBudget(Protocol):
    """Keyed by phone number id. `rate` is the caller's fallback (see the module)."""

    async def reserve(self, number: str, rate: float, count: int, horizon: float) -> list[float]:
        """Take up to `count` of the number's turns due within `horizon` seconds, without
        waiting for them; returns their trio times, in order (the caller writes each
        request at its turn, never earlier). A turn taken and not used is lost."""

    async def next_due(self, number: str, rate: float) -> float:
        """The trio time of the number's next turn."""

    async def take(self, number: str, rate: float) -> None:
        """Wait for the number's next turn and take it."""

    async def slow_down(self, number: str, seconds: float) -> None:
        """WhatsApp said the number sends too fast: nobody sends for it for a while."""

    def account_changed(self, number: str) -> None:
        """An account of this number changed: read its rate again."""


class AccountRates:
    """Each number's current `messagesPerSecond`, cached until `forget(number)`
    (the supervisor calls it on the accounts' NOTIFY).

    A number whose rate cannot be read (the database is down) keeps the rate it
    had; one never read uses the caller's fallback.
    """

    def __init__(self, db: Database | None = None) -> None:
        self._db = db
        self._rates: dict[str, float] = {}
        self._stale: set[str] = set()

    async def rate(self, number: str, fallback: float) -> float:
        known = self._rates.get(number)
        if self._db is None or (known is not None and number not in self._stale):
            return known if known is not None else fallback
        try:
            current = await account_rates.rate_of_number(self._db, number)
        except DatabaseUnavailable as error:
            log.warning("number %s: rate not readable (%s); using the last known", number, error)
            return known if known is not None else fallback
        self._stale.discard(number)
        self._rates[number] = current if current is not None else fallback
        return self._rates[number]

    def forget(self, number: str) -> None:
        self._stale.add(number)


class LocalAccountBudget:
    def __init__(self, rates: AccountRates | None = None) -> None:
        self._rates = rates or AccountRates()
        self._last_turn: dict[str, float] = {}
        self._blocked_until: dict[str, float] = {}

    async def reserve(self, number: str, rate: float, count: int, horizon: float) -> list[float]:
        gap = spacing(await self._rates.rate(number, rate))
        now = trio.current_time()
        turn = self._first_free(number, gap, now)
        turns: list[float] = []
        while len(turns) < count and turn <= now + horizon:
            turns.append(turn)
            turn += gap
        if turns:
            self._last_turn[number] = turns[-1]
        return turns

    async def next_due(self, number: str, rate: float) -> float:
        gap = spacing(await self._rates.rate(number, rate))
        return self._first_free(number, gap, trio.current_time())

    async def take(self, number: str, rate: float) -> None:
        turns = await self.reserve(number, rate, 1, math.inf)
        await trio.sleep_until(turns[0])

    async def slow_down(self, number: str, seconds: float) -> None:
        until = trio.current_time() + seconds
        self._blocked_until[number] = max(self._blocked_until.get(number, 0.0), until)

    def account_changed(self, number: str) -> None:
        # The next turn is spaced at the new rate from the last one given out.
        self._rates.forget(number)

    def _first_free(self, number: str, gap: float, now: float) -> float:
        last = self._last_turn.get(number)
        free = now if last is None else max(now, last + gap)
        return max(free, self._blocked_until.get(number, 0.0))


class _Turns:
    def __init__(self) -> None:
        self.times: deque[float] = deque()  # trio times of the turns this daemon holds
        self.fetching = trio.Lock()


class SharedAccountBudget:
    def __init__(self, redis: RedisLink, rates: AccountRates | None = None) -> None:
        self._redis = redis
        self._rates = rates or AccountRates()
        self._numbers: dict[str, _Turns] = {}
        self._unavailable_since: float | None = None

    async def reserve(self, number: str, rate: float, count: int, horizon: float) -> list[float]:
        held = await self._held(number, rate)
        now = trio.current_time()
        taken: list[float] = []
        while held.times and len(taken) < count and held.times[0] <= now + horizon:
            taken.append(max(now, held.times.popleft()))
        return taken

    async def next_due(self, number: str, rate: float) -> float:
        held = await self._held(number, rate)
        return max(trio.current_time(), held.times[0])

    async def take(self, number: str, rate: float) -> None:
        held = await self._held(number, rate)
        await trio.sleep_until(held.times.popleft())

    async def slow_down(self, number: str, seconds: float) -> None:
        self._numbers.pop(number, None)  # turns held now would ignore the slow-down
        try:
            await self._redis.slow_down(number, seconds)
        except RedisUnavailable as error:
            # Nobody sends without Redis anyway (fail closed).
            log.warning("number %s: slow-down not shared (%s)", number, error)

    def account_changed(self, number: str) -> None:
        self._rates.forget(number)
        # Turns held were spaced for the old rate; a lower one holds from now.
        self._numbers.pop(number, None)

    async def _held(self, number: str, rate: float) -> _Turns:
        """This daemon's turns of the number, at least one due, fetched if needed."""
        while True:
            held = self._numbers.setdefault(number, _Turns())
            _drop_late(held)
            if held.times:
                return held
            async with held.fetching:
                if not held.times and self._numbers.get(number) is held:
                    await self._fetch(number, rate, held)

    async def _fetch(self, number: str, rate: float, held: _Turns) -> None:
        gap = spacing(await self._rates.rate(number, rate))
        count = max(1, math.floor(SLICE_SECONDS / gap))
        failures = 0
        while True:
            try:
                offset = await self._redis.reserve_slice(
                    number, spacing=gap, count=count, hold=RESTART_HOLD_SECONDS
                )
                break
            except RedisUnavailable as error:
                failures += 1
                self._unavailable(error)
                await trio.sleep(min(2.0, 0.05 * 2**failures))
        self._available()
        # From the answer's arrival, not the request's: Redis ran the script in
        # between, so a turn is never early by Redis's clock, at worst one round
        # trip late.
        first = trio.current_time() + offset
        held.times.extend(first + i * gap for i in range(count))

    def _unavailable(self, error: RedisUnavailable) -> None:
        if self._unavailable_since is None:
            self._unavailable_since = trio.current_time()
            log.warning("redis unavailable (%s): sends wait until it is back", error)

    def _available(self) -> None:
        if self._unavailable_since is not None:
            log.warning(
                "redis reachable again after %.1f s", trio.current_time() - self._unavailable_since
            )
            self._unavailable_since = None


def _drop_late(held: _Turns) -> None:
    horizon = trio.current_time() - LATE_TOLERANCE_SECONDS
    while held.times and held.times[0] < horizon:
        held.times.popleft()
