"""A daemon that died loses its campaigns within seconds; one merely cut off from
the database keeps them until its lease expires (engine/store/leases.py).

Real time throughout: lease times and presence are PostgreSQL's clock and sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import trio
import trio_asyncio

from engine.service.engine import Engine, open_engine
from engine.settings import Settings
from engine.store.database import Database, open_database
from tests.conftest import ADMIN_DSN
from tests.engine_helpers import engine_settings
from tests.fake_gateway import ScriptedGateway
from tests.outage_helpers import CutOffDatabase
from tests.store_helpers import make_account, make_campaign, make_contacts

LEASE_TTL = 5.0


@asynccontextmanager
async def daemon(
    database_url: str, name: str, settings: Settings, gateway: ScriptedGateway
) -> AsyncIterator[tuple[CutOffDatabase, Engine]]:
    """One daemon: its own pool (its own sessions, named after it) and engine.

    A short operation timeout: after its sessions are ended, a query on one of
    A's pooled connections can wait for an answer that never comes."""
    dsn = f"{database_url}?application_name={name}"
    async with open_database(dsn, min_size=1, max_size=6, operation_timeout=5) as pool:
        db = CutOffDatabase(pool)
        async with open_engine(db, settings, gateway, instance_id=name) as engine:
            yield db, engine


async def end_sessions_of(name: str) -> None:
    """The process is gone: the server sees every session of it end."""
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(ADMIN_DSN)
    try:
        await trio_asyncio.aio_as_trio(conn.execute)(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            name,
        )
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()


async def owner_of(db: Database, campaign: str) -> str | None:
    owner: str | None = await db.fetchval(
        "SELECT owner FROM campaign_leases WHERE campaign_id = $1", campaign
    )
    return owner


def settings_for_takeover() -> Settings:
    return engine_settings(
        engine_lease_ttl_seconds=str(LEASE_TTL),
        engine_max_running_campaigns="1",
        server_shutdown_grace_seconds="0",
        sender_concurrency="2",
    )


async def test_a_dead_daemons_campaign_is_taken_over_within_three_seconds(
    db: Database, database_url: str
) -> None:
    settings = engine_settings(
        engine_lease_ttl_seconds="60",  # expiry plays no part here
        engine_max_running_campaigns="1",
        server_shutdown_grace_seconds="0",
        sender_concurrency="2",
    )
    a_name, b_name = f"daemon-a-{uuid.uuid4().hex[:6]}", f"daemon-b-{uuid.uuid4().hex[:6]}"
    gateway_a, gateway_b = ScriptedGateway(latency=0.01), ScriptedGateway(latency=0.01)
    gateway_b.block_after(0)
    with trio.fail_after(60):
        account = await make_account(db)
        await make_contacts(db, 200)
        async with daemon(database_url, a_name, settings, gateway_a) as (db_a, _):
            gateway_a.block_after(1)
            campaign = await make_campaign(db, account, messages_per_minute=600)
            await gateway_a.wait_held(1)  # A owns it and sends
            gateway_a.release()
            async with daemon(database_url, b_name, settings, gateway_b):
                # A dies: its process cannot reach anything, its sessions end.
                db_a.cut = True
                await end_sessions_of(a_name)
                died_at = trio.current_time()
                await gateway_b.wait_held(1)
                taken_after = trio.current_time() - died_at
                assert await owner_of(db, campaign) == b_name
                sent_by_a = {s.message.recipient_id for s in gateway_a.sends}
                gateway_b.release()
                db_a.cut = False  # let A's leftovers wind down (fenced out)
    assert taken_after < 3.0
    # Nothing twice: B sent none of A's, in doubt or not.
    sent_by_b = [s.message.recipient_id for s in gateway_b.sends]
    assert len(sent_by_b) == len(set(sent_by_b))
    assert not sent_by_a & set(sent_by_b)


async def test_a_live_owner_cut_off_keeps_its_campaign_until_the_lease_expires(
    db: Database, database_url: str
) -> None:
    settings = settings_for_takeover()
    a_name, b_name = f"daemon-a-{uuid.uuid4().hex[:6]}", f"daemon-b-{uuid.uuid4().hex[:6]}"
    gateway_a, gateway_b = ScriptedGateway(latency=0.01), ScriptedGateway(latency=0.01)
    gateway_b.block_after(0)
    with trio.fail_after(60):
        account = await make_account(db)
        await make_contacts(db, 200)
        async with daemon(database_url, a_name, settings, gateway_a) as (db_a, _):
            gateway_a.block_after(1)
            campaign = await make_campaign(db, account, messages_per_minute=600)
            await gateway_a.wait_held(1)  # A owns it and sends
            gateway_a.release()
            async with daemon(database_url, b_name, settings, gateway_b):
                # A is cut off, but its sessions live on at the server (a partition).
                db_a.cut = True
                cut_at = trio.current_time()
                left: float = await db.fetchval(
                    """SELECT extract(epoch FROM expires_at - now())::float8
                       FROM campaign_leases WHERE campaign_id = $1""",
                    campaign,
                )
                await gateway_b.wait_held(1)
                waited = trio.current_time() - cut_at
                assert await owner_of(db, campaign) == b_name
                gateway_b.release()
                db_a.cut = False
    assert waited >= left - 0.05  # not before the lease expired...
    assert waited <= left + 2.0  # ...and soon after it
