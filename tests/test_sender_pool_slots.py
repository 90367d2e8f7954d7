"""Sender slots (engine/actors/sender_pool.py): when slots are what limits, a
dispatcher waits until a group's worth is free (half the prefetch) instead of
marking each freed slot alone, one statement per recipient."""

from __future__ import annotations

import trio
import trio.testing

from engine.actors.sender_pool import SenderPool
from engine.messages import SendJob


def pool(concurrency: int, prefetch: int) -> SenderPool:
    send, _ = trio.open_memory_channel[SendJob](concurrency + prefetch)
    return SenderPool(send, concurrency, prefetch)


async def test_a_full_pool_hands_out_slots_a_group_at_a_time() -> None:
    slots = pool(concurrency=8, prefetch=8)  # 16 slots; a group is at least 4
    assert await slots.acquire_slots(16) == 16
    granted: list[int] = []

    async def dispatcher() -> None:
        granted.append(await slots.acquire_slots(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher)
        for _ in range(3):
            slots.release_slots(1)
            await trio.testing.wait_all_tasks_blocked()
        assert granted == []  # three free: not yet a group
        slots.release_slots(1)
    assert granted == [4]


async def test_a_small_group_is_not_held_back() -> None:
    slots = pool(concurrency=8, prefetch=8)
    assert await slots.acquire_slots(16) == 16
    granted: list[int] = []

    async def dispatcher() -> None:
        granted.append(await slots.acquire_slots(1))  # a slow campaign wants one

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher)
        await trio.testing.wait_all_tasks_blocked()
        slots.release_slots(1)
    assert granted == [1]


async def test_without_prefetch_one_free_slot_is_enough() -> None:
    slots = pool(concurrency=2, prefetch=0)
    assert await slots.acquire_slots(2) == 2
    granted: list[int] = []

    async def dispatcher() -> None:
        granted.append(await slots.acquire_slots(2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatcher)
        await trio.testing.wait_all_tasks_blocked()
        slots.release_slots(1)
    assert granted == [1]


class _Steps(trio.abc.Instrument):
    """Counts the steps of the tasks it watches."""

    def __init__(self) -> None:
        self.watched: set[trio.lowlevel.Task] = set()
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task in self.watched:
            self.steps += 1


async def test_a_freed_slot_wakes_one_waiting_dispatcher_not_all() -> None:
    slots = pool(concurrency=8, prefetch=8)
    assert await slots.acquire_slots(16) == 16
    granted: list[int] = []
    steps = _Steps()

    async def dispatcher() -> None:
        steps.watched.add(trio.lowlevel.current_task())
        granted.append(await slots.acquire_slots(1))

    async with trio.open_nursery() as nursery:
        for _ in range(200):  # slow campaigns, one slot each
            nursery.start_soon(dispatcher)
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.add_instrument(steps)
        try:
            steps.steps = 0
            slots.release_slots(1)
            await trio.testing.wait_all_tasks_blocked()
            assert granted == [1]
            assert steps.steps == 1  # the one that got it (was: all 200 looked)
        finally:
            trio.lowlevel.remove_instrument(steps)
        slots.release_slots(16)
        await trio.testing.wait_all_tasks_blocked()
        assert len(granted) == 17
        nursery.cancel_scope.cancel()
