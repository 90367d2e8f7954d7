"""The daemon's asyncio loop drops cancelled timers (engine/asyncio_loop.py):
trio-asyncio alone keeps each one, and what it holds, until its moment."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections.abc import AsyncIterator

import trio
import trio.testing
import trio_asyncio

from engine.asyncio_loop import timer_purge
from engine.store.database import Database

HOUR = 3600.0


class Body:
    """Stands for what a request's context holds (its body)."""


request_body: contextvars.ContextVar[Body] = contextvars.ContextVar("request_body")


async def test_cancelled_timers_and_what_they_hold_are_let_go(aio_loop: object) -> None:
    loop = asyncio.get_event_loop()
    bodies = weakref.WeakSet[Body]()
    fired = trio.Event()

    def arm() -> asyncio.TimerHandle:
        body = Body()
        bodies.add(body)
        request_body.set(body)  # the context a timer is armed in holds the body
        return loop.call_later(HOUR, lambda: None)

    timers = [contextvars.copy_context().run(arm) for _ in range(10_000)]
    loop.call_later(0.0, fired.set)  # a live timer among them
    await trio.testing.wait_all_tasks_blocked()  # the loop took them into its heap
    assert len(aio_loop._timers) >= len(timers)  # type: ignore[attr-defined]
    for timer in timers:
        timer.cancel()
    del timers, timer
    with trio.fail_after(10):
        await fired.wait()  # the live timer still fires
    # The purge runs at one of trio's safe points (run_sync_soon): the live timer may
    # fire before the run gets there.
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    # What is left is below the purge's threshold, whatever the number cancelled.
    assert len(aio_loop._timers) <= 2 * 100  # type: ignore[attr-defined]
    assert len(bodies) <= 2 * 100
    purge = timer_purge(aio_loop)
    assert purge is not None and purge.purges > 0


async def test_trio_asyncio_alone_keeps_them() -> None:
    # Why the purge exists: without it every cancelled timer stays in the heap.
    async with trio_asyncio.open_loop() as loop:
        for _ in range(1_000):
            loop.call_later(HOUR, lambda: None).cancel()
        await trio.testing.wait_all_tasks_blocked()  # the loop took them into its heap
        assert len(loop._timers) == 1_000


async def test_pool_traffic_arms_no_timers(db: Database, aio_loop: object) -> None:
    # asyncpg's pool would arm (and cancel) an inactivity timer at every release.
    for _ in range(200):
        assert await db.fetchval("SELECT 1") == 1
    await trio.testing.wait_all_tasks_blocked()
    assert len(aio_loop._timers) < 20  # type: ignore[attr-defined]


async def test_an_abandoned_async_generator_is_finalized_at_a_safe_point(
    aio_loop: object,
) -> None:
    # asyncio finalizes it by scheduling its aclose(); here that scheduling waits for
    # one of trio's safe points instead of entering the loop's queue from wherever the
    # collector dropped the generator.
    closed = trio.Event()

    async def stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.set()

    async def take_one() -> None:
        agen = stream()
        assert await agen.__anext__() == 1  # started, then abandoned

    await trio_asyncio.aio_as_trio(take_one)()
    gc.collect()
    with trio.fail_after(10):
        await closed.wait()


class LoopSteps(trio.abc.Instrument):
    """Counts the steps trio gives the task that runs the asyncio loop."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("._main_loop"):
            self.steps += 1


async def test_ready_callbacks_run_in_rounds_not_one_per_trio_step(aio_loop: object) -> None:
    # trio-asyncio alone takes one trio step, under a fresh deadline, per callback.
    loop = asyncio.get_event_loop()
    loop.call_later(HOUR, lambda: None)  # a far timer, as asyncpg's statement deadline
    await trio.testing.wait_all_tasks_blocked()
    ran: list[int] = []
    steps = LoopSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        for n in range(50):
            loop.call_soon(ran.append, n)
        await trio.testing.wait_all_tasks_blocked()
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert ran == list(range(50))
    assert steps.steps <= 3


async def test_a_callback_that_queues_itself_still_lets_trio_run(aio_loop: object) -> None:
    loop = asyncio.get_event_loop()
    rounds = 0

    def again() -> None:
        nonlocal rounds
        rounds += 1
        if rounds < 10_000:
            loop.call_soon(again)

    loop.call_soon(again)
    for _ in range(5):
        await trio.lowlevel.checkpoint()  # each lets the loop's task take a round
    assert rounds < 10_000
    await trio.testing.wait_all_tasks_blocked()
    assert rounds == 10_000


async def test_due_timers_run_in_their_order_between_callbacks(
    aio_loop: object, autojump_clock: trio.testing.MockClock
) -> None:
    loop = asyncio.get_event_loop()
    order: list[tuple[str, float]] = []

    def note(what: str) -> None:
        order.append((what, loop.time()))

    start = loop.time()
    loop.call_later(20, note, "second timer")
    loop.call_later(10, note, "first timer")
    loop.call_soon(note, "callback")
    done = trio.Event()
    loop.call_later(30, done.set)
    await done.wait()
    assert [what for what, _ in order] == ["callback", "first timer", "second timer"]
    assert [round(at - start) for _, at in order] == [0, 10, 20]
