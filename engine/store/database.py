"""The connection pool, and the only door from trio into asyncpg.

asyncpg is an asyncio library; it runs inside the trio-asyncio loop that the
process opens once at the top. Each call here crosses that bridge exactly once
(~100 µs), so callers pass whole logical operations — a batch claim, a batch of
outcomes, a transaction — never a single row.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

import asyncpg
import asyncpg.exceptions._base
import msgspec
import trio
import trio_asyncio

from engine.store.errors import DatabaseUnavailable, Unstorable

log = logging.getLogger(__name__)

T = TypeVar("T")

Connection = asyncpg.Connection
Record = asyncpg.Record

# Every migrating daemon takes this lock, so two starting at once apply each
# migration exactly once.
_MIGRATION_LOCK_KEY = 0x63616D70  # "camp"
_CANCEL_GRACE_SECONDS = 2.0


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + msgspec.json.encode(value)


def _decode_jsonb(data: bytes) -> Any:
    return msgspec.json.decode(data[1:])


async def _keep_session(conn: Connection) -> None:
    """Replaces asyncpg's reset-on-release, which costs a round trip per statement.
    Nothing here leaves session state behind: the migration lock is released
    explicitly and `remove_listener` unlistens."""


async def _init_connection(conn: Connection) -> None:
    # msgspec instead of the stdlib json codec: the recipients' variables are jsonb.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


# Values PostgreSQL (or asyncpg encoding an argument) refuses to store: a NUL in
# text, a number out of range, JSON nested beyond its stack. Raised as Unstorable,
# so no caller needs to know asyncpg.
_UNSTORABLE = (
    asyncpg.DataError,
    asyncpg.exceptions._base.DataError,
    asyncpg.ProgramLimitExceededError,
)


@contextmanager
def _storable() -> Iterator[None]:
    try:
        yield
    except _UNSTORABLE as error:
        raise Unstorable(str(error)) from error


# Failures of the connection rather than of the statement: the server is going
# down or starting up (57P01-57P03), the session was terminated, the socket broke
# or could not be opened (OSError, which includes TimeoutError).
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    OSError,
)


@contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except _CONNECTION_LOST as error:
        raise DatabaseUnavailable(_describe(error)) from error
    except (asyncpg.InterfaceError, asyncpg.exceptions._base.InternalClientError) as error:
        # asyncpg's own "connection is closed" (the socket went away under it), and
        # "cannot switch to state ...": the server's FATAL for a terminated session
        # arrived on an idle pooled connection just before it was used (the pool
        # replaces it once the socket's end is read). Other interface errors are
        # programming errors and stay as they are.
        if "closed" not in str(error) and "cannot switch to state" not in str(error):
            raise
        raise DatabaseUnavailable(_describe(error)) from error


@contextmanager
def _answered_within(seconds: float) -> Iterator[None]:
    """Every crossing gets a deadline. A connection can stop answering without
    closing (seen: a query on a pooled connection whose session the server had
    just terminated waited for ever); inside a shielded scope that would hold up
    a stop for good. Time out, the operation's effect is unknown, as for any
    lost connection."""
    with trio.move_on_after(seconds) as deadline:
        yield
    if deadline.cancelled_caught:
        raise DatabaseUnavailable(f"no answer from PostgreSQL within {seconds:g} s")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().removesuffix(":")


def _notify_handler(callback: Callable[[str], None]) -> Callable[[Any, int, str, str], None]:
    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return on_notify


class Listener(msgspec.Struct, frozen=True):
    """A dedicated connection LISTENing on some channels (see `Database.listen`)."""

    backend_pid: int
    backend_start: datetime
    # Set when the connection is gone (server restart, terminated session): its
    # NOTIFYs are lost from then on, so the owner listens again and rescans.
    lost: trio.Event
    stop: Callable[[], Awaitable[None]]


class Database:
    """A pool of PostgreSQL connections, used from trio. Raises Unstorable for values
    PostgreSQL cannot store."""

    def __init__(self, pool: asyncpg.Pool, *, operation_timeout: float = 120.0) -> None:
        self._pool = pool
        self._operation_timeout = operation_timeout

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """What every crossing is wrapped in: errors translated, and its deadline."""
        with _storable(), _reachable(), _answered_within(self._operation_timeout):
            yield

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        with self._guarded():
            rows: list[Record] = await trio_asyncio.aio_as_trio(self._pool.fetch)(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        with self._guarded():
            row: Record | None = await trio_asyncio.aio_as_trio(self._pool.fetchrow)(query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        with self._guarded():
            return await trio_asyncio.aio_as_trio(self._pool.fetchval)(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        with self._guarded():
            status: str = await trio_asyncio.aio_as_trio(self._pool.execute)(query, *args)
        return status

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `operation(connection, *args)` — an asyncio coroutine function — in one crossing."""

        async def on_connection() -> T:
            async with self._pool.acquire() as conn:
                return await operation(conn, *args)

        with self._guarded():
            result: T = await trio_asyncio.aio_as_trio(on_connection)()
        return result

    async def transaction(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Like `run`, inside one transaction."""

        async def in_transaction(conn: Connection, *inner: Any) -> T:
            async with conn.transaction():
                return await operation(conn, *inner)

        return await self.run(in_transaction, *args)

    async def copy_records(
        self, table: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        with self._guarded():
            await trio_asyncio.aio_as_trio(self._pool.copy_records_to_table)(
                table, records=records, columns=list(columns)
            )

    async def listen(self, channels: Mapping[str, Callable[[str], None]]) -> Listener:
        """LISTEN on `channels` over one dedicated connection; each NOTIFY calls its
        channel's callback with the payload.

        The callbacks run on the event loop thread; they must only hand the payload
        on (e.g. `send_nowait` on a trio channel). The returned `Listener` names the
        connection's server session (for presence, engine/store/leases.py) and says
        when the connection is lost; listening does not resume by itself.
        """
        lost = trio.Event()

        def on_terminated(_conn: object) -> None:
            lost.set()

        handlers = {channel: _notify_handler(callback) for channel, callback in channels.items()}

        async def start() -> tuple[Any, datetime]:
            conn: Any = await self._pool.acquire()
            try:
                conn.add_termination_listener(on_terminated)
                for channel, handler in handlers.items():
                    await conn.add_listener(channel, handler)
                started: datetime = await conn.fetchval(
                    "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                )
            except BaseException:
                await self._pool.release(conn)
                raise
            return conn, started

        with _reachable(), _answered_within(self._operation_timeout):
            conn, started = await trio_asyncio.aio_as_trio(start)()

        async def stop() -> None:
            async def release() -> None:
                try:
                    conn.remove_termination_listener(on_terminated)
                except asyncpg.InterfaceError:
                    return  # lost already: the pool took its connection back then
                try:
                    for channel, handler in handlers.items():
                        await conn.remove_listener(channel, handler)
                finally:
                    await self._pool.release(conn)

            with _reachable(), _answered_within(self._operation_timeout):
                await trio_asyncio.aio_as_trio(release)()

        return Listener(conn.get_server_pid(), started, lost, stop)


@asynccontextmanager
async def open_database(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    connect_timeout: float = 5.0,
    operation_timeout: float = 120.0,
    close_timeout: float = 10.0,
) -> AsyncIterator[Database]:
    """Open a pool. Must run inside `trio_asyncio.open_loop()`.

    Connections broken later (a server restart) are replaced on their next use;
    `connect_timeout` bounds how long an operation waits for a server that does
    not answer (asyncpg's default is a minute), `operation_timeout` how long
    any one operation may take before it counts as unreachable (the longest is
    materialising a campaign's recipients, ~30,000 rows/s). Closing waits at most
    `close_timeout` for connections still in use, then drops them: a stop never
    hangs on a connection that no longer answers."""
    pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        init=_init_connection,
        reset=_keep_session,
        # Every statement here works on a batch whose size and campaign the
        # planner must see: a generic plan of a prepared statement scans a whole
        # campaign's recipients where a custom one does primary-key lookups.
        server_settings={"plan_cache_mode": "force_custom_plan"},
        # No inactivity timer: asyncpg arms one at every release and cancels it at
        # the next acquire, thousands a second (engine/asyncio_loop.py says what
        # cancelled timers cost under trio-asyncio). Idle connections stay open.
        max_inactive_connection_lifetime=0,
        # Likewise a prepared statement's expiry timer; the cache stays bounded by size.
        max_cached_statement_lifetime=0,
        # asyncpg's own deadline, a little beyond ours so that ours fires first. What it
        # is for: a statement cancelled from trio makes asyncpg send a cancel request
        # on a new connection and hold the pooled one until that is done, without a
        # bound when this is unset. Seen in the test suite, ~1 run in 60 of one test:
        # such a request never connected, and the pool's release, then the engine's
        # stop, waited for ever. Past this, asyncpg drops the connection instead.
        # It costs a timer per statement, armed and cancelled (purged by
        # engine/asyncio_loop.py): a few µs, against a stop that may never end.
        command_timeout=operation_timeout + _CANCEL_GRACE_SECONDS,
    )
    try:
        yield Database(pool, operation_timeout=operation_timeout)
    finally:
        # asyncpg's close waits for every connection to be released and closed
        # gracefully, however long that takes; cancelled, it terminates them.
        with trio.move_on_after(close_timeout) as waited:
            await trio_asyncio.aio_as_trio(pool.close)()
        if waited.cancelled_caught:
            log.warning("closing the pool took over %.0f s; connections dropped", close_timeout)


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("engine.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def _apply_migrations(conn: Connection) -> list[str]:
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied


async def apply_migrations(db: Database) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied = await db.run(_apply_migrations)
    for name in applied:
        log.info("applied migration %s", name)
    return applied
