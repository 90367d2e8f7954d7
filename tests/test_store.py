"""The store against the real PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from engine.core.campaign_view import campaign_object
from engine.messages import Outcome, StatusUpdate
from engine.store import campaign_runs, campaigns, leases, recipients, statuses
from engine.store.campaigns import CAMPAIGN_WITH_COUNTERS
from engine.store.contacts import ContactInput, upsert_contacts
from engine.store.database import Database, apply_migrations, open_database
from engine.store.segments import create_segment
from tests.store_helpers import (
    LEASE_OWNER,
    OWNER,
    make_account,
    make_campaign,
    make_contacts,
    make_running,
    phone,
    plan_nodes,
    running_campaign,
    utc_now,
)

# Every migration file shipped in the package, in the order they apply.
SHIPPED_MIGRATIONS = sorted(
    p.name for p in (Path(__file__).parent.parent / "engine/store/migrations").glob("*.sql")
)


T = TypeVar("T")


class CountingDatabase(Database):
    """The real Database, counting bridge crossings."""

    crossings = 0

    async def execute(self, query: str, *args: Any) -> str:
        self.crossings += 1
        return await super().execute(query, *args)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.crossings += 1
        return await super().fetch(query, *args)

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self.crossings += 1
        return await super().run(operation, *args)


async def test_migrations_apply_once_and_then_change_nothing(
    aio_loop: object, empty_database_url: str
) -> None:
    with trio.fail_after(30):
        async with open_database(empty_database_url, min_size=1, max_size=2) as db:
            first = await apply_migrations(db)
            tables_before = await db.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
            second = await apply_migrations(db)
            tables_after = await db.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
    assert first == SHIPPED_MIGRATIONS
    assert second == []
    assert sorted(r[0] for r in tables_before) == sorted(r[0] for r in tables_after)


async def test_concurrent_migrate_runs_both_succeed(
    aio_loop: object, empty_database_url: str
) -> None:
    results: list[list[str]] = []

    async def migrate() -> None:
        async with open_database(empty_database_url, min_size=1, max_size=1) as db:
            results.append(await apply_migrations(db))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(migrate)
    assert sorted(results, key=len) == [[], [], [], SHIPPED_MIGRATIONS]


async def test_materialise_excludes_opted_out_keeps_one_per_phone_and_is_idempotent(
    db: Database,
) -> None:
    account = await make_account(db)
    await make_contacts(db, 50)
    await upsert_contacts(
        db, OWNER, [ContactInput(phone=phone(i), opted_out=True) for i in range(10)]
    )
    # Another user's contacts never leak into this user's audience.
    await make_contacts(db, 20, owner_id="someone-else")
    campaign = await make_campaign(db, account)

    assert await recipients.materialise_recipients(db, campaign) == 40
    await make_contacts(db, 60)  # more contacts after the audience was frozen
    assert await recipients.materialise_recipients(db, campaign) == 40
    phones = await db.fetch(
        "SELECT phone FROM campaign_recipients WHERE campaign_id = $1", campaign
    )
    assert len({r["phone"] for r in phones}) == 40
    assert await recipients.count_by_status(db, campaign) == {"pending": 40}
    assert (await recipients.campaign_stats(db, campaign)).pending == 40


async def test_freezing_an_audience_checks_no_key_per_recipient(db: Database) -> None:
    # A per-row foreign-key check cost half of a start's insert (migration 0016).
    account = await make_account(db)
    await make_contacts(db, 40)
    campaign = await make_campaign(db, account, schedule_type="manual")  # not frozen yet
    cuts, sample_end = recipients._split([], None)

    async def explain(conn: Any) -> Any:
        async with conn.transaction():
            rows = await conn.fetch(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + recipients._MATERIALISE,
                campaign,
                cuts,
                sample_end,
                recipients.HELD_FOR_WINNER,
            )
            return msgspec.json.decode(rows[0][0])[0]

    run = await db.run(explain)
    assert run["Plan"]["Tuples Inserted"] == 40
    # The counters, once for the statement, and nothing for each row.
    assert [(t["Trigger Name"], t["Calls"]) for t in run["Triggers"]] == [
        ("recipients_counters_insert", 1)
    ]


async def test_deleting_a_campaign_deletes_its_recipients_and_no_others(db: Database) -> None:
    account = await make_account(db)
    await make_contacts(db, 12)
    kept, deleted = [await make_campaign(db, account) for _ in "ab"]
    for campaign in (kept, deleted):
        assert await recipients.materialise_recipients(db, campaign) == 12

    assert await campaigns.delete_campaign(db, OWNER, deleted)

    assert await recipients.count_by_status(db, deleted) == {}
    assert await recipients.count_by_status(db, kept) == {"pending": 12}


class StatementLog(Database):
    """The real Database, keeping every statement its operations send (BEGIN and
    COMMIT included): the round trips each one waits for."""

    statements: list[str]

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self.statements = []

        def logged(query: Any) -> None:
            self.statements.append(" ".join(query.query.split())[:60])

        async def with_log(conn: Any, *inner: Any) -> T:
            conn.add_query_logger(logged)
            try:
                return await operation(conn, *inner)
            finally:
                conn.remove_query_logger(logged)

        return await super().run(with_log, *args)


async def test_a_start_is_five_statements_and_answers_what_it_froze(
    aio_loop: object, database_url: str
) -> None:
    # Each statement of a start is a round trip waited for on a loop that every
    # running campaign shares (benchmarks/README.md, start latency): lock, insert
    # the audience, the update answering the detail and the variables check; BEGIN
    # and COMMIT.
    async with open_database(database_url, min_size=1, max_size=1) as db:
        account = await make_account(db)
        await make_contacts(db, 30)
        first, campaign = [await make_campaign(db, account, schedule_type="manual") for _ in "ab"]
        logged = StatementLog(db._pool)
        # The first start also has asyncpg learn the types of its parameters, once.
        await campaigns.start_campaign(logged, first, OWNER, now=utc_now())

        previous, detail = await campaigns.start_campaign(logged, campaign, OWNER, now=utc_now())

        assert len(logged.statements) == 5, logged.statements
        assert previous == "draft"
        shown = campaign_object(detail.row)
        assert (shown["status"], shown["total_recipients"], shown["stats"]["pending"]) == (
            "scheduled",
            30,
            30,
        )
        assert detail.pricing == {}
        assert await recipients.count_by_status(db, campaign) == {"pending": 30}
        assert (
            await db.fetchval(
                "SELECT count(*) FROM campaign_counters WHERE campaign_id = $1", campaign
            )
            == 1
        )


async def test_materialise_audiences_by_tags_contacts_and_segment(db: Database) -> None:
    account = await make_account(db)
    await upsert_contacts(
        db,
        OWNER,
        [
            ContactInput(phone=phone(1), tags=["vip"]),
            ContactInput(phone=phone(2), tags=["vip", "beta"]),
            ContactInput(phone=phone(3), tags=["beta"]),
            ContactInput(phone=phone(4)),
        ],
    )
    ids = {r["phone"]: str(r["id"]) for r in await db.fetch("SELECT id, phone FROM contacts")}
    by_tags = await make_campaign(
        db, account, audience_type="tags", audience_config={"tags": ["vip"]}
    )
    by_ids = await make_campaign(
        db, account, audience_type="contacts", audience_config={"contactIds": [ids[phone(4)]]}
    )
    segment = await create_segment(
        db, OWNER, name="s", filter={"tags": ["beta"], "contactIds": [ids[phone(4)]]}
    )
    by_segment = await make_campaign(
        db, account, audience_type="segment", audience_config={"segmentId": str(segment["id"])}
    )

    async def phones_of(campaign: str) -> set[str]:
        rows = await db.fetch(
            "SELECT phone FROM campaign_recipients WHERE campaign_id = $1", campaign
        )
        return {r["phone"] for r in rows}

    assert await phones_of(by_tags) == {phone(1), phone(2)}
    assert await phones_of(by_ids) == {phone(4)}
    assert await phones_of(by_segment) == {phone(2), phone(3), phone(4)}


async def test_variables_are_frozen_at_materialisation(db: Database) -> None:
    account = await make_account(db)
    await upsert_contacts(
        db,
        OWNER,
        [
            ContactInput(
                phone=phone(1), first_name="Ann", last_name="Lee", attributes={"city": "Oslo"}
            )
        ],
    )
    campaign = await make_campaign(db, account)
    await upsert_contacts(db, OWNER, [ContactInput(phone=phone(1), first_name="Changed")])
    [recipient] = await recipients.claim_batch(db, campaign, after_id=0, limit=10, now=utc_now())
    assert recipient.variables == {
        "firstName": "Ann",
        "lastName": "Lee",
        "name": "Ann Lee",
        "phone": phone(1),
        "city": "Oslo",
    }


async def test_concurrent_markers_never_get_the_same_recipient(
    aio_loop: object, database_url: str
) -> None:
    async with open_database(database_url, min_size=4, max_size=12) as db:
        account = await make_account(db)
        await make_contacts(db, 5_000)
        campaign = await make_campaign(db, account)
        await make_running(db, campaign)
        rows = await db.fetch("SELECT id FROM campaign_recipients WHERE campaign_id = $1", campaign)
        all_ids = [r["id"] for r in rows]
        won: list[int] = []

        async def marker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(10):
                group = rng.sample(all_ids, 1_000)
                won.extend(
                    await recipients.mark_sending(
                        db, campaign, group, lease_owner=LEASE_OWNER, now=utc_now()
                    )
                )

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for seed in range(12):
                    nursery.start_soon(marker, seed)
        assert len(won) == len(set(won))
        counts = await recipients.count_by_status(db, campaign)
        assert counts.get("sending", 0) == len(won)


async def test_mark_sending_refuses_when_paused_or_lease_lost(db: Database) -> None:
    campaign, ids = await running_campaign(db, 10)

    assert (
        await recipients.mark_sending(db, campaign, ids[:2], lease_owner="intruder", now=utc_now())
        == []
    )
    await campaign_runs.apply_action(db, campaign, OWNER, "pause", now=utc_now())
    assert (
        await recipients.mark_sending(db, campaign, ids, lease_owner=LEASE_OWNER, now=utc_now())
        == []
    )
    assert await recipients.count_by_status(db, campaign) == {"pending": 10}


async def test_ten_thousand_outcomes_in_one_round_trip(aio_loop: object, database_url: str) -> None:
    async with open_database(database_url, min_size=1, max_size=4) as db:
        account = await make_account(db)
        await make_contacts(db, 10_000)
        campaign = await make_campaign(db, account)
        await make_running(db, campaign)
        ids = [r["id"] for r in await db.fetch("SELECT id FROM campaign_recipients ORDER BY id")]
        marked = await recipients.mark_sending(
            db, campaign, ids, lease_owner=LEASE_OWNER, now=utc_now()
        )
        assert len(marked) == 10_000
        outcomes = [
            Outcome(i, "sent", 1, provider_message_id=f"wamid.{i}")
            if n % 10
            else Outcome(i, "failed", 3, error_code="131026", error_message="undeliverable")
            for n, i in enumerate(ids)
        ]
        counting = CountingDatabase(db._pool)
        with trio.fail_after(60):
            changed = await recipients.record_outcomes(counting, outcomes, now=utc_now())
        assert counting.crossings == 1
        assert changed.changed == 10_000
        # The counters it moved, as they were just after the batch.
        assert (changed.stats[campaign].sent, changed.stats[campaign].failed) == (9_000, 1_000)
        assert await recipients.count_by_status(db, campaign) == {
            "sent": 9_000,
            "failed": 1_000,
        }
        stats = await recipients.campaign_stats(db, campaign)
        assert (stats.pending, stats.sent, stats.failed) == (0, 9_000, 1_000)
        attempts = await db.fetchval("SELECT sum(attempts) FROM campaign_recipients")
        assert attempts == 9_000 + 3 * 1_000


async def test_webhook_facts_are_idempotent_and_order_independent(db: Database) -> None:
    campaign, ids = await running_campaign(db, 3)
    await recipients.mark_sending(db, campaign, ids, lease_owner=LEASE_OWNER, now=utc_now())
    t0 = utc_now()
    # The webhook overtakes the stored answer for recipient 0.
    read_first = [
        StatusUpdate(ids[0], "wamid.0", "read", t0 + timedelta(seconds=3)),
        StatusUpdate(None, "wamid.0", "replied", t0 + timedelta(seconds=4)),
    ]
    await statuses.apply_status_updates(db, read_first)
    await recipients.record_outcomes(
        db,
        [Outcome(i, "sent", 1, provider_message_id=f"wamid.{n}") for n, i in enumerate(ids)],
        now=t0,
    )
    later = [
        StatusUpdate(ids[0], "wamid.0", "delivered", t0 + timedelta(seconds=2)),
        StatusUpdate(ids[1], "wamid.1", "delivered", t0 + timedelta(seconds=2)),
        StatusUpdate(
            None, "wamid.2", "failed", t0 + timedelta(seconds=2), "131047", "re-engagement"
        ),
    ]
    for _ in range(3):  # replays change nothing further
        await statuses.apply_status_updates(db, later + read_first)
    counts = await recipients.count_by_status(db, campaign)
    assert counts == {"read": 1, "delivered": 1, "failed": 1}
    stats = await recipients.campaign_stats(db, campaign)
    assert (stats.sent, stats.delivered, stats.read, stats.replied, stats.failed) == (3, 2, 1, 1, 1)
    row = await db.fetchrow("SELECT * FROM campaign_recipients WHERE id = $1", ids[0])
    assert row is not None and row["replied_at"] == t0 + timedelta(seconds=4)


async def test_in_doubt_recovery_and_timeout(db: Database) -> None:
    campaign, ids = await running_campaign(db, 4)
    started = utc_now()
    await recipients.mark_sending(db, campaign, ids[:3], lease_owner=LEASE_OWNER, now=started)
    assert await recipients.mark_abandoned_in_doubt(db, campaign) == 3
    resolving = [StatusUpdate(ids[0], None, "delivered", started)]
    applied = await statuses.apply_status_updates(db, resolving)
    assert applied.resolved_in_doubt == [campaign] == applied.campaigns
    replayed = await statuses.apply_status_updates(db, resolving)
    assert replayed.resolved_in_doubt == [] and replayed.campaigns == [campaign]
    assert (
        await recipients.expire_in_doubt(
            db, campaign, cutoff=started + timedelta(seconds=1), resend=False, now=utc_now()
        )
        == 2
    )
    assert await recipients.count_by_status(db, campaign) == {
        "delivered": 1,
        "failed": 2,
        "pending": 1,
    }
    stats = await recipients.campaign_stats(db, campaign)
    assert (stats.in_doubt, stats.failed, stats.pending) == (0, 2, 1)


async def test_delivered_after_failed_changes_nothing(db: Database) -> None:
    account = await make_account(db)
    await make_contacts(db, 1)
    campaign = await make_campaign(db, account)
    await make_running(db, campaign)
    [recipient] = await recipients.claim_batch(db, campaign, after_id=0, limit=1, now=utc_now())
    await recipients.mark_sending(
        db, campaign, [recipient.id], lease_owner=LEASE_OWNER, now=utc_now()
    )
    t0 = utc_now()
    await recipients.record_outcomes(
        db, [Outcome(recipient.id, "sent", 1, provider_message_id="wamid.x")], now=t0
    )
    await statuses.apply_status_updates(
        db, [StatusUpdate(recipient.id, "wamid.x", "failed", t0, "131047", "expired")]
    )
    await statuses.apply_status_updates(
        db, [StatusUpdate(None, "wamid.x", "delivered", t0 + timedelta(seconds=1))]
    )
    stats = await recipients.campaign_stats(db, campaign)
    assert (stats.sent, stats.delivered, stats.failed) == (1, 0, 1)
    assert await recipients.count_by_status(db, campaign) == {"failed": 1}


async def test_a_draft_shows_no_progress_and_a_frozen_empty_audience_shows_all_done(
    db: Database,
) -> None:
    account = await make_account(db)
    draft = await make_campaign(db, account, schedule_type="manual")
    empty = await make_campaign(db, account)  # "now" with no contacts: frozen, 0 recipients
    rows = {
        str(r["id"]): campaign_object(r)
        for r in await db.fetch(f"{CAMPAIGN_WITH_COUNTERS} WHERE c.owner_id = $1", OWNER)
    }
    assert rows[draft]["progress"] == 0.0
    assert rows[empty]["progress"] == 100.0


async def test_runs_here_only_while_running_under_our_lease(db: Database) -> None:
    campaign, _ = await running_campaign(db, 1)
    assert await leases.runs_here(db, campaign, lease_owner=LEASE_OWNER)
    assert not await leases.runs_here(db, campaign, lease_owner="another-daemon")
    await campaign_runs.apply_action(db, campaign, OWNER, "pause", now=utc_now())
    assert not await leases.runs_here(db, campaign, lease_owner=LEASE_OWNER)


async def test_a_claimed_batch_stops_at_its_byte_budget(db: Database) -> None:
    account = await make_account(db)
    big = "x" * 1000
    contacts = [
        ContactInput(phone=phone(i), attributes={f"k{j}": big for j in range(100)})
        for i in range(60)
    ]
    await upsert_contacts(db, OWNER, contacts)
    campaign = await make_campaign(db, account)
    await make_running(db, campaign)
    claimed = await recipients.claim_batch(db, campaign, after_id=0, limit=1_000, now=utc_now())
    # Each holds ~100 kB of variables: 4 MiB takes about 40 of the 60.
    size = sum(len(msgspec.json.encode(r.variables)) for r in claimed)
    assert 30 <= len(claimed) < 60
    assert size <= recipients.BATCH_BYTES + 110_000
    rest = await recipients.claim_batch(
        db, campaign, after_id=claimed[-1].id, limit=1_000, now=utc_now()
    )
    assert len(claimed) + len(rest) == 60


async def test_marking_a_few_recipients_reads_only_those_rows_whatever_the_statistics(
    db: Database,
) -> None:
    """The planner once scanned every pending row of the campaign to mark five of them
    (statistics taken before the recipients existed made that look cheap): the cost of
    a mark must grow with its group, not with its campaign."""
    with trio.fail_after(30):
        campaign, ids = await running_campaign(db, 1000)
        rows = await db.fetch(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + recipients.MARK_SENDING,
            campaign,
            ids[100:105],
            LEASE_OWNER,
            utc_now(),
        )
    plan = msgspec.json.decode(rows[0][0])[0]["Plan"]
    # No index walk returns more than the group (a small table may still be read whole).
    walked = [n["Actual Rows"] for n in plan_nodes(plan) if n["Node Type"].startswith("Index")]
    assert max(walked) <= 5
    assert await recipients.count_by_status(db, campaign) == {"pending": 995, "sending": 5}
