"""The portfolio's reach in PostgreSQL (engine/store/portfolio_reach.py): one
statement per batch, right under concurrent reservations from several daemons."""

from __future__ import annotations

from datetime import timedelta

import trio

from engine.store import accounts, portfolio_reach, recipients
from engine.store.database import Database, open_database
from tests.store_helpers import OWNER, make_account, make_campaign, make_contacts, utc_now


async def pending_ids(db: Database, campaign_id: str) -> list[tuple[int, str]]:
    rows = await db.fetch(
        "SELECT id, phone FROM campaign_recipients WHERE campaign_id = $1 ORDER BY id",
        campaign_id,
    )
    return [(r["id"], r["phone"]) for r in rows]


async def test_concurrent_reservations_of_one_portfolio_never_exceed_its_limit(
    db: Database, database_url: str
) -> None:
    with trio.fail_after(30):
        first = await make_account(db, portfolio_id="waba", messaging_limit=120)
        second = await make_account(db, phone_number_id="PN2", portfolio_id="waba")
        await make_contacts(db, 400)
        batches = []
        for account in (first, second, first, second):
            campaign = await make_campaign(db, account, schedule_type="manual")
            await recipients.materialise_recipients(db, campaign)
            rows = await pending_ids(db, campaign)
            batches += [(account, rows[i : i + 50]) for i in range(0, len(rows), 50)]
        now = utc_now()
        deferred: list[portfolio_reach.Deferred] = []
        # Two pools: two daemons' sessions racing for the same window.
        async with (
            open_database(database_url, min_size=4, max_size=4) as one,
            open_database(database_url, min_size=4, max_size=4) as other,
        ):

            async def reserve(pool: Database, account: str, rows: list[tuple[int, str]]) -> None:
                ids, phones = [r[0] for r in rows], [r[1] for r in rows]
                deferred.append(await portfolio_reach.reserve(pool, account, ids, phones, now=now))

            async with trio.open_nursery() as nursery:
                for n, (account, rows) in enumerate(batches):
                    nursery.start_soon(reserve, (one, other)[n % 2], account, rows)
        # 400 phones, each in four campaigns: 120 pass (in every campaign), 280 wait.
        waited = frozenset().union(*(d.ids for d in deferred))
        passed = {phone for _, rows in batches for id_, phone in rows if id_ not in waited}
        assert len(passed) == 120
        assert sum(len(d.ids) for d in deferred) == 4 * 280
        assert await db.fetchval("SELECT count(*) FROM portfolio_reach") == 120
        waiting = await db.fetch(
            "SELECT DISTINCT not_before, deferred_reason FROM campaign_recipients"
            " WHERE deferred_reason IS NOT NULL"
        )
        assert [(w["not_before"], w["deferred_reason"]) for w in waiting] == [
            (now + timedelta(hours=24), "messaging_limit")
        ]
        use = await portfolio_reach.window_use(db, second, now=now)
        assert (use.limit, use.used, use.resets_at) == (120, 120, now + timedelta(hours=24))


async def test_the_window_moves_and_a_changed_limit_applies_at_once(db: Database) -> None:
    with trio.fail_after(30):
        account = await make_account(db, messaging_limit=2)
        await make_contacts(db, 5)
        campaign = await make_campaign(db, account, schedule_type="manual")
        await recipients.materialise_recipients(db, campaign)
        rows = await pending_ids(db, campaign)
        ids, phones = [r[0] for r in rows], [r[1] for r in rows]
        start = utc_now()
        first = await portfolio_reach.reserve(db, account, ids, phones, now=start)
        assert first.ids == frozenset(ids[2:]) and first.until == start + timedelta(hours=24)
        # The same two again an hour later: reached already, they pass and renew.
        later = start + timedelta(hours=1)
        again = await portfolio_reach.reserve(db, account, ids[:2], phones[:2], now=later)
        assert again.ids == frozenset() and again.limited
        # A day after the first reach the window still holds them (renewed).
        day = start + timedelta(hours=24)
        assert (await portfolio_reach.reserve(db, account, ids[2:], phones[2:], now=day)).ids
        # Raised limit: room at once; unlimited: nothing deferred or recorded.
        await accounts.update_account(db, OWNER, account, {"messaging_limit": 3})
        raised = await portfolio_reach.reserve(db, account, ids[2:], phones[2:], now=day)
        assert raised.ids == frozenset(ids[3:])
        await accounts.update_account(db, OWNER, account, {"messaging_limit": None})
        free = await portfolio_reach.reserve(db, account, ids[3:], phones[3:], now=day)
        assert free == portfolio_reach.Deferred(frozenset(), None, False)
        # The window moves: a day after the renewals they are pruned.
        await accounts.update_account(db, OWNER, account, {"messaging_limit": 3})
        moved = later + timedelta(hours=24)
        use = await portfolio_reach.window_use(db, account, now=moved)
        assert use.used == 1  # only the third, reached at `day`
        await portfolio_reach.reserve(db, account, ids[3:], phones[3:], now=moved)
        assert await db.fetchval("SELECT count(*) FROM portfolio_reach") == 3


async def test_another_owners_limit_change_releases_none_of_the_waiting(db: Database) -> None:
    with trio.fail_after(30):
        account = await make_account(db, messaging_limit=1)
        await make_contacts(db, 3)
        campaign = await make_campaign(db, account, schedule_type="manual")
        await recipients.materialise_recipients(db, campaign)
        ids = [i for i, _ in await pending_ids(db, campaign)]
        later = utc_now() + timedelta(hours=1)
        await recipients.defer(db, ids, [later] * 3, reason="messaging_limit")
        # Someone else's PATCH of this account id: not found, and nothing moves.
        assert (
            await accounts.update_account(db, "intruder", account, {"messaging_limit": 9}) is None
        )
        assert await accounts.update_account(db, "intruder", account, {"portfolio_id": "x"}) is None
        waiting = await db.fetchval(
            "SELECT count(*) FROM campaign_recipients"
            " WHERE campaign_id = $1 AND deferred_reason = 'messaging_limit'",
            campaign,
        )
        # The owner's own change does release them.
        await accounts.update_account(db, OWNER, account, {"messaging_limit": 9})
        released = await db.fetchval(
            "SELECT count(*) FROM campaign_recipients"
            " WHERE campaign_id = $1 AND deferred_reason IS NULL AND not_before IS NULL",
            campaign,
        )
    assert waiting == 3
    assert released == 3
