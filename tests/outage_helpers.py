"""Databases that go away on a test's command: the real thing, wrapped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from engine.store.database import Database, Listener, Record
from engine.store.errors import DatabaseUnavailable

T = TypeVar("T")


class CutOffDatabase(Database):
    """A daemon's own pool, which a test can cut off: every new operation then
    fails as an unreachable server makes it fail. What is already open stays open
    (as a partition leaves the server's side of a session)."""

    def __init__(self, inner: Database) -> None:
        self._inner = inner
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise DatabaseUnavailable("OSError: Connect call failed (cut off by the test)")

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        self._check()
        return await self._inner.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        self._check()
        return await self._inner.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self._check()
        return await self._inner.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        self._check()
        return await self._inner.execute(query, *args)

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._check()
        return await self._inner.run(operation, *args)

    async def transaction(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._check()
        return await self._inner.transaction(operation, *args)

    async def copy_records(
        self, table: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        self._check()
        await self._inner.copy_records(table, records, columns)

    async def listen(self, channels: Mapping[str, Callable[[str], None]]) -> Listener:
        self._check()
        return await self._inner.listen(channels)
