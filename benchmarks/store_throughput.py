"""Store throughput for 100,000 recipients: materialisation, marking, recording.

    python -m benchmarks.store_throughput [--recipients N] [--database-url URL]

Creates a scratch database on the given server, prints one JSON document, drops
the database. Measures the store through the trio-asyncio bridge, as the engine
uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import trio
import trio_asyncio

from engine.messages import Outcome
from engine.store import campaign_runs, leases, recipients
from engine.store.accounts import create_account
from engine.store.campaigns import CampaignInput, create_campaign
from engine.store.contacts import ContactInput, upsert_contacts
from engine.store.database import Database, apply_migrations, open_database

OWNER = "bench"


def _admin(url: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


async def _measure(db: Database, count: int, batch: int) -> dict[str, float]:
    now = datetime.now(UTC)
    account = await create_account(
        db,
        OWNER,
        name="bench",
        phone_number_id="PN",
        access_token="t",
        api_url="http://127.0.0.1:1",
    )
    contacts = [ContactInput(phone=f"+1555{i:07d}", first_name=f"F{i}") for i in range(count)]
    started = time.perf_counter()
    for first in range(0, count, 10_000):
        await upsert_contacts(db, OWNER, contacts[first : first + 10_000])
    contacts_seconds = time.perf_counter() - started

    campaign = await create_campaign(
        db,
        OWNER,
        CampaignInput(
            account_id=str(account["id"]),
            name="bench",
            message_type="text",
            message_content="Hi {{firstName}}",
            audience_type="all",
            audience_config={},
            schedule_type="manual",
            throttle_config={},
        ),
        now=now,
    )
    campaign_id = str(campaign["id"])
    started = time.perf_counter()
    total = await recipients.materialise_recipients(db, campaign_id)
    materialise_seconds = time.perf_counter() - started

    await campaign_runs.apply_action(db, campaign_id, OWNER, "start", now=now)
    await leases.try_acquire_lease(db, campaign_id, owner="bench", ttl=3600)
    await campaign_runs.begin_running(db, campaign_id, now=now)
    ids = [r["id"] for r in await db.fetch("SELECT id FROM campaign_recipients ORDER BY id")]

    started = time.perf_counter()
    for first in range(0, total, batch):
        await recipients.mark_sending(
            db, campaign_id, ids[first : first + batch], lease_owner="bench", now=now
        )
    mark_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for first in range(0, total, batch):
        outcomes = [
            Outcome(i, "sent", 1, provider_message_id=f"wamid.{i}")
            for i in ids[first : first + batch]
        ]
        await recipients.record_outcomes(db, outcomes, now=now)
    record_seconds = time.perf_counter() - started
    stats = await recipients.campaign_stats(db, campaign_id)
    assert stats.sent == total, "counters disagree with the rows"
    return {
        "recipients": total,
        "batch": batch,
        "contacts_upserted_per_second": round(count / contacts_seconds),
        "recipients_materialised_per_second": round(total / materialise_seconds),
        "recipients_marked_sending_per_second": round(total / mark_seconds),
        "outcomes_recorded_per_second": round(total / record_seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000, help="rows per mark / record statement")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="any database on the server; a scratch one is created beside it",
    )
    args = parser.parse_args()
    name = f"ce_store_bench_{uuid.uuid4().hex[:8]}"
    base = args.database_url.rpartition("/")[0]
    _admin(args.database_url, f"CREATE DATABASE {name}")
    try:

        async def run() -> dict[str, float]:
            async with trio_asyncio.open_loop(), open_database(f"{base}/{name}") as db:
                await apply_migrations(db)
                return await _measure(db, args.recipients, args.batch)

        print(json.dumps(trio.run(run), indent=2))
    finally:
        _admin(args.database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
