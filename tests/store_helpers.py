"""Builders for rows the engine tests need, through the store's own functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.store import campaign_runs, leases, recipients
from engine.store.accounts import create_account
from engine.store.campaigns import CampaignInput, create_campaign
from engine.store.contacts import ContactInput, upsert_contacts
from engine.store.database import Database

OWNER = "user-1"
LEASE_OWNER = "daemon-test"


def utc_now() -> datetime:
    return datetime.now(UTC)


def phone(n: int) -> str:
    return f"+1555{n:07d}"


async def make_account(db: Database, **overrides: Any) -> str:
    fields: dict[str, Any] = {
        "name": "Main",
        "phone_number_id": "PN1",
        "access_token": "secret-token",
        "api_url": "http://127.0.0.1:1",
    }
    fields.update(overrides)
    row = await create_account(db, overrides.pop("owner_id", OWNER), **fields)
    return str(row["id"])


async def make_contacts(db: Database, count: int, *, owner_id: str = OWNER, **fields: Any) -> None:
    contacts = [
        ContactInput(phone=phone(i), first_name=f"First{i}", **fields) for i in range(count)
    ]
    await upsert_contacts(db, owner_id, contacts)


async def make_campaign(
    db: Database,
    account_id: str,
    *,
    owner_id: str = OWNER,
    schedule_type: str = "now",
    messages_per_minute: float = 60_000,
    batch_size: int = 100,
    audience_type: str = "all",
    audience_config: dict[str, Any] | None = None,
    message: str = "Hello {{firstName}}",
    now: datetime | None = None,
) -> str:
    row = await create_campaign(
        db,
        owner_id,
        CampaignInput(
            account_id=account_id,
            name="Launch",
            message_type="text",
            message_content=message,
            audience_type=audience_type,
            audience_config=audience_config or {},
            schedule_type=schedule_type,
            throttle_config={
                "messagesPerMinute": messages_per_minute,
                "batchSize": batch_size,
                "delayBetweenBatches": 0,
            },
        ),
        now=now or utc_now(),
    )
    return str(row["id"])


async def make_running(db: Database, campaign_id: str, *, owner: str = LEASE_OWNER) -> None:
    now = utc_now()
    assert await leases.try_acquire_lease(db, campaign_id, owner=owner, ttl=60)
    assert await campaign_runs.begin_running(db, campaign_id, now=now)


async def running_campaign(db: Database, size: int) -> tuple[str, list[int]]:
    """A running campaign (our lease) of `size` pending recipients, and their ids."""
    account = await make_account(db)
    await make_contacts(db, size)
    campaign = await make_campaign(db, account)
    await make_running(db, campaign)
    pending = await recipients.claim_batch(db, campaign, after_id=0, limit=size, now=utc_now())
    return campaign, [r.id for r in pending]


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first."""
    return [node, *(n for child in node.get("Plans", ()) for n in plan_nodes(child))]
