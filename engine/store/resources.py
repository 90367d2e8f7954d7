"""Accounts, contacts, segments and campaign creation: the rows users manage.

Every function is scoped by `owner_id`; a row of another owner is invisible.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from engine.store.database import Connection, Database, Record
from engine.store.recipients import materialise_in


class ContactInput(msgspec.Struct, frozen=True):
    phone: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    company: str | None = None
    tags: list[str] = []
    attributes: dict[str, str] = {}
    opted_out: bool = False


class CampaignInput(msgspec.Struct, frozen=True):
    account_id: str
    name: str
    message_type: str
    message_content: Any
    audience_type: str
    audience_config: dict[str, Any]
    schedule_type: str
    throttle_config: dict[str, Any]
    template_variables: dict[str, str] = {}
    media_url: str | None = None
    scheduled_at: datetime | None = None


async def create_account(
    db: Database,
    owner_id: str,
    *,
    name: str,
    phone_number_id: str,
    access_token: str,
    api_url: str | None = None,
    status: str = "connected",
    messages_per_second: int = 80,
) -> Record:
    row = await db.fetchrow(
        """INSERT INTO accounts (owner_id, name, phone_number_id, access_token, api_url, status,
                                 messages_per_second)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
        owner_id,
        name,
        phone_number_id,
        access_token,
        api_url,
        status,
        messages_per_second,
    )
    assert row is not None
    return row


async def upsert_contacts(
    db: Database, owner_id: str, contacts: Sequence[ContactInput], *, now: datetime | None = None
) -> tuple[int, int]:
    """Insert or update contacts by phone in one statement; returns (created, updated).

    The caller removes duplicate phones first: one statement cannot touch a row twice.
    """
    if not contacts:
        return 0, 0
    rows = await db.fetch(
        """INSERT INTO contacts (owner_id, phone, first_name, last_name, email, company, tags,
                                 attributes, opted_out)
           SELECT $1, u.phone, u.first_name, u.last_name, u.email, u.company,
                  coalesce((SELECT array_agg(t) FROM jsonb_array_elements_text(u.tags::jsonb) t), '{}'),
                  u.attributes::jsonb, u.opted_out
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::boolean[])
                AS u(phone, first_name, last_name, email, company, tags, attributes, opted_out)
           ON CONFLICT (owner_id, phone) DO UPDATE SET
               first_name = excluded.first_name, last_name = excluded.last_name,
               email = excluded.email, company = excluded.company, tags = excluded.tags,
               attributes = excluded.attributes, opted_out = excluded.opted_out,
               updated_at = now()
           RETURNING (xmax = 0) AS created""",
        owner_id,
        [c.phone for c in contacts],
        [c.first_name for c in contacts],
        [c.last_name for c in contacts],
        [c.email for c in contacts],
        [c.company for c in contacts],
        # JSON text: asyncpg would read a list of lists as a two-dimensional array.
        [msgspec.json.encode(c.tags).decode() for c in contacts],
        [msgspec.json.encode(c.attributes).decode() for c in contacts],
        [c.opted_out for c in contacts],
    )
    created = sum(1 for r in rows if r["created"])
    return created, len(rows) - created


async def create_segment(
    db: Database, owner_id: str, *, name: str, filter: dict[str, Any]
) -> Record:
    row = await db.fetchrow(
        "INSERT INTO segments (owner_id, name, filter) VALUES ($1, $2, $3) RETURNING *",
        owner_id,
        name,
        filter,
    )
    assert row is not None
    return row


async def _create_campaign(
    conn: Connection, owner_id: str, campaign: CampaignInput, now: datetime
) -> Record:
    # "now" and "scheduled" leave draft at once; the audience is frozen then.
    if campaign.schedule_type == "manual":
        status, scheduled_at = "draft", campaign.scheduled_at
    elif campaign.schedule_type == "now":
        status, scheduled_at = "scheduled", now
    else:
        status, scheduled_at = "scheduled", campaign.scheduled_at
    row = await conn.fetchrow(
        """INSERT INTO campaigns (owner_id, account_id, name, status, message_type, message_content,
                                  media_url, audience_type, audience_config, schedule_type,
                                  scheduled_at, throttle_config, template_variables,
                                  created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
           RETURNING id""",
        owner_id,
        campaign.account_id,
        campaign.name,
        status,
        campaign.message_type,
        campaign.message_content,
        campaign.media_url,
        campaign.audience_type,
        campaign.audience_config,
        campaign.schedule_type,
        scheduled_at,
        campaign.throttle_config,
        campaign.template_variables,
        now,
    )
    assert row is not None
    await conn.execute("INSERT INTO campaign_counters (campaign_id) VALUES ($1)", row["id"])
    if status != "draft":
        await materialise_in(conn, row["id"])
    created = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", row["id"])
    assert created is not None
    return created


async def create_campaign(
    db: Database, owner_id: str, campaign: CampaignInput, *, now: datetime
) -> Record:
    """Insert a campaign; "now" and "scheduled" ones get their recipients at once."""
    return await db.transaction(_create_campaign, owner_id, campaign, now)
