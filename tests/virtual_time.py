"""Running the engine on `trio.testing.MockClock` against the real PostgreSQL.

With autojump, virtual time leaps to the next deadline as soon as every task
waits, and a task waiting for PostgreSQL counts as waiting. So while a query is
on the wire the clock jumps to whatever deadline is nearest: the test's
`fail_after` (TooSlowError in the middle of an INSERT), asyncpg's connect
timeout (it runs on trio's clock through trio-asyncio), a lease renewal ten
seconds away. Timings measured on such a clock are noise.

`VirtualTimeDatabase` wraps the real `Database` and holds the clock still while
any of its operations is in flight: a query takes no virtual time, and only
the engine's own sleeps (token bucket, latency, backoff, timeouts) move it.
Engine test modules import the `db` fixture below, which replaces conftest's there.

A NOTIFY travels outside any operation: between the commit and its delivery
the clock may jump. A test that needs a command to land at an exact virtual
instant holds the clock itself until the engine's listener heard it
(`with db.hold.held(): ...; await db.heard(payload)`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import msgspec
import pytest
import trio
import trio.testing

from engine.store.database import Database, Listener, Record, open_database

T = TypeVar("T")


class ClockHold:
    """Suspends the mock clock's autojump while at least one holder is inside."""

    def __init__(self, clock: trio.testing.MockClock) -> None:
        self._clock = clock
        self._threshold = clock.autojump_threshold
        self._holders = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._holders:
            self._threshold = self._clock.autojump_threshold
            self._clock.autojump_threshold = math.inf
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if not self._holders:
                self._clock.autojump_threshold = self._threshold


class VirtualTimeDatabase(Database):
    """The real database; virtual time stands still while an operation runs."""

    def __init__(self, inner: Database, hold: ClockHold) -> None:
        self._inner = inner
        self.hold = hold
        self.notifications: list[str] = []  # payloads delivered to any listener
        self._notified = trio.Event()

    async def heard(self, payload: str) -> None:
        """Wait until a listener (the engine's supervisor) was handed `payload`."""
        while payload not in self.notifications:
            await self._notified.wait()

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        with self.hold.held():
            return await self._inner.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        with self.hold.held():
            return await self._inner.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        with self.hold.held():
            return await self._inner.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        with self.hold.held():
            return await self._inner.execute(query, *args)

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        with self.hold.held():
            return await self._inner.run(operation, *args)

    async def transaction(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        with self.hold.held():
            return await self._inner.transaction(operation, *args)

    async def copy_records(
        self, table: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        with self.hold.held():
            await self._inner.copy_records(table, records, columns)

    async def listen(self, channels: Mapping[str, Callable[[str], None]]) -> Listener:
        def heard_by(callback: Callable[[str], None]) -> Callable[[str], None]:
            def on_notify(payload: str) -> None:
                callback(payload)
                self.notifications.append(payload)
                self._notified.set()
                self._notified = trio.Event()

            return on_notify

        with self.hold.held():
            listener = await self._inner.listen({c: heard_by(cb) for c, cb in channels.items()})

        async def held_stop() -> None:
            with self.hold.held():
                await listener.stop()

        return msgspec.structs.replace(listener, stop=held_stop)


@asynccontextmanager
async def open_virtual_time_database(
    dsn: str, clock: trio.testing.MockClock
) -> AsyncIterator[VirtualTimeDatabase]:
    hold = ClockHold(clock)
    with hold.held():
        opened = open_database(dsn, min_size=1, max_size=10)
        inner = await opened.__aenter__()
    try:
        yield VirtualTimeDatabase(inner, hold)
    finally:
        with hold.held():
            await opened.__aexit__(None, None, None)


@pytest.fixture(name="db")
async def virtual_time_db(
    aio_loop: object, database_url: str, autojump_clock: trio.testing.MockClock
) -> AsyncIterator[VirtualTimeDatabase]:
    async with open_virtual_time_database(database_url, autojump_clock) as database:
        yield database
