"""The virtual-time database of tests/virtual_time.py: queries take no virtual time."""

from __future__ import annotations

import trio
import trio.testing

from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]


async def test_queries_take_no_virtual_time(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(36_000):
        before = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(20):  # more than the pool holds: some wait, some connect
                nursery.start_soon(db.fetchval, "SELECT pg_sleep(0.02)")
        assert trio.current_time() == before
        # Sleeps still jump, and the pool still works hours later.
        await trio.sleep(4 * 3600)
        assert trio.current_time() == before + 4 * 3600
        assert await db.fetchval("SELECT 1") == 1
