"""Campaign leases on PostgreSQL's clock, and the early takeover of a gone daemon's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import trio

from engine.store import leases
from engine.store.database import Database, Listener, open_database
from tests.store_helpers import make_account, make_campaign, utc_now


async def expire(db: Database, campaign: str) -> None:
    """The lease's time is up, by the database's clock (no waiting in a test)."""
    await db.execute(
        """UPDATE campaign_leases SET expires_at = now() - interval '1 second'
           WHERE campaign_id = $1""",
        campaign,
    )


async def end_grace(db: Database, instance_id: str) -> None:
    """The daemon has been seen gone for longer than the grace."""
    await db.execute(
        """UPDATE daemon_presence SET missing_since = now() - interval '1 minute'
           WHERE instance_id = $1 AND missing_since IS NOT NULL""",
        instance_id,
    )


async def claimable(db: Database, owner: str = "claimer") -> list[str]:
    return await leases.claimable_campaigns(db, now=utc_now(), owner=owner, limit=10, exclude=[])


@asynccontextmanager
async def present(dsn: str, db: Database, instance_id: str) -> AsyncIterator[Listener]:
    """A daemon's presence: its own session, registered, ended on exit."""
    async with open_database(dsn, min_size=1, max_size=1) as own:
        listener = await own.listen({})
        await leases.register_presence(
            db,
            instance_id,
            backend_pid=listener.backend_pid,
            backend_start=listener.backend_start,
        )
        try:
            yield listener
        finally:
            await listener.stop()


async def test_a_lease_is_exclusive_until_it_expires_by_the_databases_clock(db: Database) -> None:
    with trio.fail_after(30):
        campaign = await make_campaign(db, await make_account(db))
        assert await claimable(db) == [campaign]
        assert await leases.try_acquire_lease(db, campaign, owner="a", ttl=30)
        assert not await leases.try_acquire_lease(db, campaign, owner="b", ttl=30)
        assert await claimable(db, owner="b") == []
        # Ours even without an actor: the owner may claim it again.
        assert await claimable(db, owner="a") == [campaign]
        assert await leases.renew_leases(db, [campaign], owner="b", ttl=30) == set()

        expires_at: datetime = await db.fetchval(
            "SELECT expires_at - now() FROM campaign_leases WHERE campaign_id = $1", campaign
        )
        assert 29 < expires_at.total_seconds() <= 30  # type: ignore[attr-defined]

        await expire(db, campaign)
        assert await claimable(db, owner="b") == [campaign]
        assert await leases.try_acquire_lease(db, campaign, owner="b", ttl=30)
        assert await leases.renew_leases(db, [campaign], owner="a", ttl=30) == set()
        await leases.release_lease(db, campaign, owner="b")
        assert await leases.try_acquire_lease(db, campaign, owner="a", ttl=30)


async def test_an_expired_lease_nobody_took_is_still_renewed_by_its_owner(db: Database) -> None:
    with trio.fail_after(30):
        campaign = await make_campaign(db, await make_account(db))
        assert await leases.try_acquire_lease(db, campaign, owner="a", ttl=30)
        await expire(db, campaign)
        assert await leases.renew_leases(db, [campaign], owner="a", ttl=30) == {campaign}
        assert not await leases.try_acquire_lease(db, campaign, owner="b", ttl=30)


async def test_a_gone_daemons_lease_is_taken_after_the_grace_not_before(
    db: Database, database_url: str
) -> None:
    with trio.fail_after(30):
        campaign = await make_campaign(db, await make_account(db))
        async with present(database_url, db, "daemon-a"):
            assert await leases.try_acquire_lease(db, campaign, owner="a", ttl=300)
            await db.execute("UPDATE campaign_leases SET owner = 'daemon-a'")
            assert await leases.note_missing_daemons(db) == 0  # alive: nothing noted
            await end_grace(db, "daemon-a")
            assert await claimable(db) == []
        # Its session ended (the process died): noted now, taken after the grace.
        assert await leases.note_missing_daemons(db) == 1
        assert await claimable(db) == []
        assert not await leases.try_acquire_lease(db, campaign, owner="claimer", ttl=30)
        wake = await leases.next_wake_up(db, now=utc_now(), owner="claimer")
        assert wake.others_hold_leases
        assert wake.seconds_to_lease_event is not None
        assert 0 < wake.seconds_to_lease_event <= leases.PRESENCE_GRACE_SECONDS
        await end_grace(db, "daemon-a")
        assert await claimable(db) == [campaign]
        assert await leases.try_acquire_lease(db, campaign, owner="claimer", ttl=30)


async def test_a_daemon_that_registers_again_within_the_grace_keeps_its_leases(
    db: Database, database_url: str
) -> None:
    with trio.fail_after(30):
        campaign = await make_campaign(db, await make_account(db))
        async with present(database_url, db, "daemon-a"):
            await leases.try_acquire_lease(db, campaign, owner="daemon-a", ttl=300)
        await leases.note_missing_daemons(db)
        async with present(database_url, db, "daemon-a"):  # a new session: listening again
            await end_grace(db, "daemon-a")
            assert await leases.note_missing_daemons(db) == 0
            assert await claimable(db) == []
            assert not await leases.try_acquire_lease(db, campaign, owner="claimer", ttl=30)


async def test_a_lease_without_a_registered_daemon_waits_for_expiry(db: Database) -> None:
    with trio.fail_after(30):
        campaign = await make_campaign(db, await make_account(db))
        assert await leases.try_acquire_lease(db, campaign, owner="unregistered", ttl=300)
        await leases.note_missing_daemons(db)
        assert await claimable(db) == []
        await expire(db, campaign)
        assert await claimable(db) == [campaign]
