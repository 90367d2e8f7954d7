"""Account budgets: one daemon (local) and several daemons sharing Redis."""

from __future__ import annotations

import uuid

import pytest
import trio
from trio.testing import MockClock

from engine.actors.account_budget import LocalAccountBudget, SharedAccountBudget
from engine.clock import WallClock
from engine.transport.redis_link import open_redis
from tests.conftest import REDIS_URL

# A token may be granted up to 1 µs early (engine/token_bucket.py): float time.
TOLERANCE = 2e-6


def most_in_any_window(times: list[float], window: float) -> int:
    """The most timestamps inside any half-open window of this length."""
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] >= window - TOLERANCE:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_local_budget_spaces_sends_at_the_account_rate(autojump_clock: object) -> None:
    budget = LocalAccountBudget()
    sent: list[float] = []

    async def sender() -> None:
        for _ in range(50):
            await budget.take("acct", 20)
            sent.append(trio.current_time())

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(sender)
    assert len(sent) == 200
    assert most_in_any_window(sent, 1.0) <= 20
    assert 9.9 <= max(sent) - min(sent) <= 10.1


@pytest.fixture
def io_clock() -> MockClock:
    """Virtual time that jumps only after 20 ms of real idleness: redis-py's socket
    timeouts must not fire while a reply is on its way."""
    return MockClock(autojump_threshold=0.02)


async def test_two_daemons_sharing_redis_never_exceed_the_account_rate(
    aio_loop: object, io_clock: MockClock
) -> None:
    account = f"acct-{uuid.uuid4()}"  # a fresh key: runs never see each other's slices
    sent: list[float] = []
    with trio.fail_after(3600):
        async with open_redis(REDIS_URL) as redis_a, open_redis(REDIS_URL) as redis_b:
            clock = WallClock()
            daemons = [SharedAccountBudget(redis_a, clock), SharedAccountBudget(redis_b, clock)]

            async def sender(budget: SharedAccountBudget) -> None:
                for _ in range(25):
                    await budget.take(account, 20)
                    sent.append(trio.current_time())

            async with trio.open_nursery() as nursery:
                for budget in daemons:
                    for _ in range(3):
                        nursery.start_soon(sender, budget)
    assert len(sent) == 150
    assert most_in_any_window(sent, 1.0) <= 20
    # Both daemons together still use the whole budget, not half of it each.
    assert max(sent) - min(sent) <= 150 / 20 + 1


async def test_shared_slow_down_stops_every_daemon(aio_loop: object, io_clock: MockClock) -> None:
    account = f"acct-{uuid.uuid4()}"
    with trio.fail_after(3600):
        async with open_redis(REDIS_URL) as redis_a, open_redis(REDIS_URL) as redis_b:
            clock = WallClock()
            first, second = SharedAccountBudget(redis_a, clock), SharedAccountBudget(redis_b, clock)
            await first.take(account, 10)
            await first.slow_down(account, 5.0)
            slowed_at = trio.current_time()
            await second.take(account, 10)
            assert trio.current_time() - slowed_at >= 5.0 - 1e-3
