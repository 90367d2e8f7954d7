"""PostgreSQL going away: the store says so with one error, and the supervisor rides
it out (engine/store/retrying.py, engine/actors/supervisor.py)."""

from __future__ import annotations

import itertools
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import pytest
import trio
import trio.testing
import trio_asyncio

from engine.store import recipients
from engine.store.database import Database, Listener, Record, open_database
from engine.store.errors import DatabaseUnavailable
from engine.store.retrying import Outage, retrying
from tests.conftest import ADMIN_DSN
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import make_account, make_campaign, make_contacts
from tests.virtual_time import VirtualTimeDatabase, open_virtual_time_database

T = TypeVar("T")


async def terminate_sessions(database_url: str, *, matching: str = "%") -> int:
    """What `pg_terminate_backend` does to a daemon: every session on its database ends."""
    name = database_url.rsplit("/", 1)[1]
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(ADMIN_DSN)
    try:
        ended: int = await trio_asyncio.aio_as_trio(conn.fetchval)(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = $1 AND pid <> pg_backend_pid() AND query LIKE $2""",
            name,
            matching,
        )
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()
    return ended


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


# --- the store: one error for "the database is not there" ---------------------------


async def test_a_session_terminated_mid_statement_raises_database_unavailable(
    db: Database, database_url: str
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def long_statement() -> None:
                try:
                    await db.fetchval("SELECT pg_sleep(30)")
                except Exception as error:
                    failures.append(error)

            nursery.start_soon(long_statement)
            # Each look is a round trip: the statement reaches the server meanwhile.
            while not await terminate_sessions(database_url, matching="SELECT pg_sleep%"):
                pass
        assert len(failures) == 1
        assert isinstance(failures[0], DatabaseUnavailable)
        assert await db.fetchval("SELECT 1") == 1  # the pool replaced the connection


async def test_an_unreachable_server_raises_database_unavailable(aio_loop: object) -> None:
    with trio.fail_after(30):
        dsn = f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere"
        async with open_database(dsn, min_size=0, max_size=1) as db:
            with pytest.raises(DatabaseUnavailable, match=r"^ConnectionRefusedError: "):
                await db.fetchval("SELECT 1")


async def test_a_listener_says_when_its_connection_is_lost(db: Database, database_url: str) -> None:
    heard: list[str] = []
    notified = trio.Event()

    def on_notify(payload: str) -> None:
        heard.append(payload)
        notified.set()

    with trio.fail_after(30):
        listener = await db.listen({"outage_test": on_notify})
        await terminate_sessions(database_url)
        await listener.lost.wait()
        await listener.stop()  # harmless on a lost connection
        again = await db.listen({"outage_test": on_notify})
        assert again.backend_pid != listener.backend_pid
        await db.execute("SELECT pg_notify('outage_test', 'after')")
        await notified.wait()
        await again.stop()
    assert heard == ["after"]


async def test_retrying_rides_out_an_outage_and_logs_it_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.store.retrying")
    outage = Outage()
    attempts: list[float] = []

    async def flaky(value: int) -> int:
        attempts.append(trio.current_time())
        if len(attempts) <= 12:
            raise DatabaseUnavailable("ConnectionRefusedError: [Errno 111] Connection refused")
        return value

    with trio.fail_after(3600):
        started = trio.current_time()
        assert await retrying("recording outcomes", flaky, 7, outage=outage) == 7
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert max(gaps) == pytest.approx(2.0)  # capped
    assert trio.current_time() - started == pytest.approx(sum(gaps))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "database unavailable (ConnectionRefusedError" in messages[0]
    assert "while recording outcomes" in messages[0]
    assert "reachable again" in messages[1]
    assert outage.since is None and outage.outages == 1


# --- the engine: the supervisor survives, listens again, catches up ------------------


class OutageDatabase(VirtualTimeDatabase):
    """The real database, except while `down`: then every operation fails the way
    an unreachable server makes it fail."""

    def __init__(self, inner: VirtualTimeDatabase) -> None:
        super().__init__(inner._inner, inner.hold)
        self.notifications = inner.notifications
        self.down = False
        self.refused = 0

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise DatabaseUnavailable("OSError: Connect call failed ('127.0.0.1', 5432)")

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        self._check()
        return await super().fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        self._check()
        return await super().fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self._check()
        return await super().fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        self._check()
        return await super().execute(query, *args)

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._check()
        return await super().run(operation, *args)

    async def transaction(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._check()
        return await super().transaction(operation, *args)

    async def copy_records(
        self, table: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        self._check()
        await super().copy_records(table, records, columns)

    async def listen(self, channels: Mapping[str, Callable[[str], None]]) -> Listener:
        self._check()
        return await super().listen(channels)


@asynccontextmanager
async def outage_database(
    database_url: str, clock: trio.testing.MockClock
) -> AsyncIterator[OutageDatabase]:
    async with open_virtual_time_database(database_url, clock) as inner:
        yield OutageDatabase(inner)


async def until_heard(db: OutageDatabase) -> None:
    """Send NOTIFYs on the command channel until the engine's listener hears one."""
    while True:
        payload = f"recheck:{uuid.uuid4()}"  # names no campaign: harmless
        # Retried as any client would: a pooled connection may still be a dead one.
        await retrying(
            "probing", db.execute, "SELECT pg_notify('campaign_engine_commands', $1)", payload
        )
        with trio.move_on_after(1):
            await db.heard(payload)
            return


async def test_the_engine_rides_out_a_minute_without_its_database_and_listens_again(
    aio_loop: object, database_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    log = EventLog()
    with trio.fail_after(36_000):
        async with outage_database(database_url, autojump_clock) as db:
            account = await make_account(db)
            await make_contacts(db, 30)
            async with trio.open_nursery() as nursery:
                async with running_engine(db, gateway, engine_settings()) as engine:
                    await nursery.start(log.collect, engine)
                    db.down = True
                    with db.hold.held():  # the LISTEN session ends with the outage
                        await terminate_sessions(database_url)
                    await trio.sleep(60)
                    assert db.refused > 10  # the supervisor kept trying, and kept living
                    db.down = False
                    # It listens again: a NOTIFY sent now reaches it (none would, ever,
                    # on a connection that was not opened again).
                    with trio.fail_after(30):
                        await until_heard(db)
                    campaign = await make_campaign(db, account, messages_per_minute=6_000)
                    await log.wait_for("campaign:completed", campaign)
                nursery.cancel_scope.cancel()
            assert await recipients.count_by_status(db, campaign) == {"sent": 30}
    assert all(gateway.sends_for(send.message.recipient_id) == 1 for send in gateway.sends)


async def test_a_throttle_change_missed_while_not_listening_applies_once_back(
    aio_loop: object, database_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    log = EventLog()
    with trio.fail_after(36_000):
        async with outage_database(database_url, autojump_clock) as db:
            account = await make_account(db)
            await make_contacts(db, 200)
            async with trio.open_nursery() as nursery:
                async with running_engine(db, gateway, engine_settings()) as engine:
                    await nursery.start(log.collect, engine)
                    gateway.block_after(5)
                    campaign = await make_campaign(db, account, messages_per_minute=60)
                    await gateway.wait_held(1)
                    db.down = True
                    with db.hold.held():
                        await terminate_sessions(database_url)
                    # Another daemon's API takes the edit; its NOTIFY finds nobody here.
                    await retrying("editing", db._inner.transaction, edit_throttle, campaign)
                    gateway.release()
                    await trio.sleep(5)
                    db.down = False
                    back_at = trio.current_time()
                    await trio.sleep(5)
                    sent_since = sum(1 for s in gateway.sends if s.at >= back_at + 1)
                nursery.cancel_scope.cancel()
    # The old rate would have sent about 4 in those 4 s; the new one (20/s) far more.
    assert sent_since >= 40


async def edit_throttle(conn: Any, campaign: str) -> None:
    await conn.execute(
        """UPDATE campaigns SET throttle_config = throttle_config
               || '{"messagesPerMinute": 1200}' WHERE id = $1""",
        campaign,
    )
    await conn.execute("SELECT pg_notify('campaign_engine_commands', $1)", f"throttle:{campaign}")
