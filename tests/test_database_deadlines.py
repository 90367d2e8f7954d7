"""A connection that stops answering holds nothing up for long
(engine/store/database.py): every operation has a deadline, even inside a
shielded scope, and closing the pool waits a bounded time for what is in use.

A statement that sleeps on the server stands in for a connection that never
answers. Real time, kept short.
"""

from __future__ import annotations

import asyncio

import asyncpg.connect_utils
import pytest
import trio
import trio.testing

from engine.store.database import open_database
from engine.store.errors import DatabaseUnavailable


async def test_an_operation_with_no_answer_fails_at_its_deadline_even_when_shielded(
    aio_loop: object, database_url: str
) -> None:
    async with open_database(database_url, min_size=1, max_size=1, operation_timeout=0.5) as db:
        with trio.fail_after(20):
            started = trio.current_time()
            with trio.CancelScope(shield=True), pytest.raises(DatabaseUnavailable) as raised:
                await db.execute("SELECT pg_sleep(30)")
            waited = trio.current_time() - started
            # The pool's one connection is usable again at once.
            assert await db.fetchval("SELECT 1") == 1
    assert "within 0.5 s" in str(raised.value)
    assert waited < 5


async def test_closing_the_pool_drops_a_connection_still_in_use_after_its_timeout(
    aio_loop: object, database_url: str
) -> None:
    with trio.fail_after(20):
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            async with open_database(
                database_url, min_size=1, max_size=1, operation_timeout=60, close_timeout=0.5
            ) as db:

                async def stuck() -> None:
                    with trio.CancelScope(shield=True), pytest.raises(DatabaseUnavailable):
                        await db.execute("SELECT pg_sleep(30)")

                nursery.start_soon(stuck)
                await trio.testing.wait_all_tasks_blocked()
            closed_after = trio.current_time() - started
    assert closed_after < 5


async def test_a_cancel_request_that_never_connects_does_not_hold_the_connection_for_ever(
    aio_loop: object, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement cancelled from trio: asyncpg sends a cancel request on a new
    connection and keeps the pooled one until it is done. One that never connects
    (seen once in CI, at a harness's stop) must not keep it for ever."""

    async def never_connects(**_: object) -> None:
        await asyncio.sleep(60)  # for ever, as far as this test goes

    monkeypatch.setattr(asyncpg.connect_utils, "_cancel", never_connects)
    async with open_database(database_url, min_size=1, max_size=1, operation_timeout=0.5) as db:
        with trio.fail_after(15):
            with trio.move_on_after(0.05):
                await db.execute("SELECT pg_sleep(0.3)")
            # The pool's one connection comes back (dropped and replaced).
            assert await db.fetchval("SELECT 1") == 1
