"""Per-number budgets: one daemon (local), several sharing Redis, Redis's clock and
outages, and the current rate read from the accounts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio_asyncio
from trio.testing import MockClock

from engine.actors.account_budget import (
    RESTART_HOLD_SECONDS,
    AccountBudget,
    AccountRates,
    LocalAccountBudget,
    SharedAccountBudget,
    spacing,
)
from engine.store import account_rates
from engine.store.accounts import update_account
from engine.store.database import Database
from engine.transport.redis_link import RedisLink, RedisUnavailable, open_redis
from tests.conftest import REDIS_URL
from tests.store_helpers import OWNER, make_account

TOLERANCE = 1e-6


def most_in_any_second(times: list[float]) -> int:
    """The most timestamps inside any closed window of one second."""
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] > 1.0 + TOLERANCE:
            first += 1
        most = max(most, last - first + 1)
    return most


class FixedRates(AccountRates):
    """Rates a test sets; `forget` (what the accounts' NOTIFY triggers) applies them."""

    def __init__(self, rates: dict[str, float]) -> None:
        super().__init__()
        self.current = dict(rates)
        self.applied = dict(rates)

    async def rate(self, number: str, fallback: float) -> float:
        return self.applied.get(number, fallback)

    def forget(self, number: str) -> None:
        self.applied[number] = self.current[number]


async def send_all(
    budget: AccountBudget, number: str, count: int, senders: int, *, rate: float = 1.0
) -> list[float]:
    """`senders` tasks each writing at every turn they get; when each write happened."""
    sent: list[float] = []

    async def sender() -> None:
        while len(sent) < count:
            turns = await budget.reserve(number, rate, 1, 0.01)
            if not turns:
                await trio.sleep_until(await budget.next_due(number, rate))
                continue
            await trio.sleep_until(turns[0])
            sent.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(senders):
            nursery.start_soon(sender)
    return sent[:count]


async def test_local_budget_never_exceeds_the_rate_in_any_rolling_second(
    autojump_clock: MockClock,
) -> None:
    budget = LocalAccountBudget(FixedRates({"PN": 20}))
    with trio.fail_after(3600):
        sent = await send_all(budget, "PN", 200, senders=4)
    assert most_in_any_second(sent) <= 20
    # ...and uses it: the margin for arrival jitter costs 5%, no more.
    assert 199 / 20 <= max(sent) - min(sent) <= 199 / 20 * 1.06


async def test_local_budget_is_shared_by_every_caller_of_a_number(
    autojump_clock: MockClock,
) -> None:
    budget = LocalAccountBudget(FixedRates({"PN": 30}))
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            results: list[list[float]] = []

            async def campaign() -> None:
                results.append(await send_all(budget, "PN", 90, senders=2))

            nursery.start_soon(campaign)
            nursery.start_soon(campaign)
    assert most_in_any_second(results[0] + results[1]) <= 30


async def test_a_rate_change_applies_from_the_next_turn(autojump_clock: MockClock) -> None:
    rates = FixedRates({"PN": 2})
    budget = LocalAccountBudget(rates)
    with trio.fail_after(3600):
        first = await budget.reserve("PN", 2, 1, 0)
        assert first == [trio.current_time()]
        rates.current["PN"] = 50
        budget.account_changed("PN")
        due = await budget.next_due("PN", 2)
        assert due - first[0] == pytest.approx(spacing(50))


async def test_the_callers_rate_is_only_a_fallback(autojump_clock: MockClock) -> None:
    budget = LocalAccountBudget(FixedRates({}))
    with trio.fail_after(3600):
        sent = await send_all(budget, "PN", 40, senders=2, rate=10)
    assert most_in_any_second(sent) <= 10


async def test_slow_down_stops_the_number_for_that_long(autojump_clock: MockClock) -> None:
    budget = LocalAccountBudget(FixedRates({"PN": 10}))
    with trio.fail_after(3600):
        await budget.take("PN", 10)
        slowed_at = trio.current_time()
        await budget.slow_down("PN", 5.0)
        assert await budget.reserve("PN", 10, 1, 1.0) == []
        await budget.take("PN", 10)
        assert trio.current_time() - slowed_at >= 5.0


# --- shared through Redis ---------------------------------------------------------------


@pytest.fixture
def io_clock() -> MockClock:
    """Virtual time that jumps only after 20 ms of real idleness: redis-py's socket
    timeouts must not fire while a reply is on its way."""
    return MockClock(autojump_threshold=0.02)


@asynccontextmanager
async def shared_redis(
    server_clock: Callable[[], float] | None = None,
) -> AsyncIterator[tuple[RedisLink, RedisLink]]:
    """Two daemons' links to one Redis, under a prefix no other run sees. With
    `server_clock`, the scripts use it instead of Redis's TIME (virtual time)."""
    prefix = f"test-{uuid.uuid4()}:"
    async with (
        open_redis(REDIS_URL, prefix=prefix, server_clock=server_clock) as a,
        open_redis(REDIS_URL, prefix=prefix, server_clock=server_clock) as b,
    ):
        yield a, b


async def test_two_daemons_sharing_redis_never_exceed_the_rate(
    aio_loop: object, io_clock: MockClock
) -> None:
    sent: list[float] = []
    with trio.fail_after(3600):
        async with shared_redis(trio.current_time) as (redis_a, redis_b):
            rates = FixedRates({"PN": 20})
            daemons = [SharedAccountBudget(redis_a, rates), SharedAccountBudget(redis_b, rates)]
            async with trio.open_nursery() as nursery:
                for budget in daemons:

                    async def daemon(budget: SharedAccountBudget = budget) -> None:
                        sent.extend(await send_all(budget, "PN", 75, senders=3))

                    nursery.start_soon(daemon)
    assert len(sent) == 150
    assert most_in_any_second(sent) <= 20
    # Both daemons together use the whole budget, not half of it each.
    assert max(sent) - min(sent) <= 150 / 20 * 1.06 + 0.2


async def test_on_redis_time_two_daemons_never_exceed_the_rate(aio_loop: object) -> None:
    """On the real clock, slices timed by Redis's TIME (what production uses; a
    daemon's own wall clock plays no part, tests/test_clock_skew.py)."""
    sent: list[float] = []
    with trio.fail_after(30):
        async with shared_redis() as (redis_a, redis_b):
            rates = FixedRates({"PN": 40})
            async with trio.open_nursery() as nursery:
                for link in (redis_a, redis_b):

                    async def daemon(budget: SharedAccountBudget) -> None:
                        sent.extend(await send_all(budget, "PN", 40, senders=2))

                    nursery.start_soon(daemon, SharedAccountBudget(link, rates))
    assert len(sent) == 80
    assert most_in_any_second(sent) <= 40
    # The first slice waited out the hold of a fresh epoch; then the whole rate.
    assert max(sent) - min(sent) <= 80 / 40 * 1.06 + 0.3


async def test_shared_slow_down_stops_every_daemon(aio_loop: object, io_clock: MockClock) -> None:
    with trio.fail_after(3600):
        async with shared_redis(trio.current_time) as (redis_a, redis_b):
            rates = FixedRates({"PN": 10})
            first, second = SharedAccountBudget(redis_a, rates), SharedAccountBudget(redis_b, rates)
            await first.take("PN", 10)
            await first.slow_down("PN", 5.0)
            slowed_at = trio.current_time()
            await second.take("PN", 10)
            assert trio.current_time() - slowed_at >= 5.0 - 1e-3


async def test_after_redis_lost_its_state_no_turn_comes_within_the_hold(
    aio_loop: object, io_clock: MockClock
) -> None:
    """A restarted Redis (no persistence) forgets every budget while daemons may
    still hold turns it gave out: new slices start only after the hold."""
    with trio.fail_after(3600):
        async with shared_redis(trio.current_time) as (redis_a, redis_b):
            rates = FixedRates({"PN": 20})
            before = await send_all(SharedAccountBudget(redis_a, rates), "PN", 10, senders=1)
            # What `redis-cli shutdown nosave` and a restart leave: nothing.
            await trio_asyncio.aio_as_trio(redis_a._client.flushdb)()
            after = await send_all(SharedAccountBudget(redis_b, rates), "PN", 10, senders=1)
    assert min(after) - max(before) >= RESTART_HOLD_SECONDS - 0.1
    assert most_in_any_second(before + after) <= 20


class FlakyLink(RedisLink):
    """The real link, unreachable for the first `failures` calls."""

    def __init__(self, inner: RedisLink, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    async def reserve_slice(self, number: str, *, spacing: float, count: int, hold: float) -> float:
        if self.failures:
            self.failures -= 1
            raise RedisUnavailable("ConnectionError: Connection refused")
        return await self._inner.reserve_slice(number, spacing=spacing, count=count, hold=hold)


async def test_redis_down_fails_closed_and_says_so_once(
    aio_loop: object, io_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.actors.account_budget")
    with trio.fail_after(3600):
        async with shared_redis(trio.current_time) as (redis_a, _):
            flaky = FlakyLink(redis_a, failures=8)
            budget = SharedAccountBudget(flaky, FixedRates({"PN": 10}))
            started = trio.current_time()
            await budget.take("PN", 10)  # waits while Redis is down, never raises
            assert flaky.failures == 0
            assert trio.current_time() - started >= 2.0  # the backoff of 8 failures
    messages = [r.getMessage() for r in caplog.records]
    assert sum("redis unavailable" in m for m in messages) == 1
    assert sum("redis reachable again" in m for m in messages) == 1


# --- the current rate of a number, from the accounts -----------------------------------


async def test_a_number_shared_by_two_accounts_has_the_lower_rate_and_follows_changes(
    db: Database,
) -> None:
    heard: list[str] = []
    changed = trio.Event()

    def on_account(number: str) -> None:
        heard.append(number)
        changed.set()

    with trio.fail_after(30):
        first = await make_account(db, phone_number_id="PN-shared", messages_per_second=30)
        await make_account(db, phone_number_id="PN-shared", messages_per_second=50)
        listener = await db.listen({account_rates.ACCOUNT_CHANNEL: on_account})
        try:
            rates = AccountRates(db)
            assert await rates.rate("PN-shared", 80) == 30
            assert await rates.rate("PN-unknown", 80) == 80
            await update_account(db, OWNER, first, {"messages_per_second": 10})
            assert await rates.rate("PN-shared", 80) == 30  # cached until told
            await changed.wait()
            assert heard == ["PN-shared"]
            rates.forget("PN-shared")
            assert await rates.rate("PN-shared", 80) == 10
        finally:
            await listener.stop()
