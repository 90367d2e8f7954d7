"""Campaigns as users manage them: create, list, edit, delete, duplicate, and their recipients.

Every function is scoped by `owner_id`; a row of another owner is invisible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from engine.core import lifecycle
from engine.messages import CommandKind
from engine.store.campaign_runs import notify_in
from engine.store.database import Connection, Database, Record
from engine.store.errors import InvalidReference, set_clause
from engine.store.recipients import materialise_in
from engine.store.segments import _audience_size


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
    # Tracked links (engine/core/tracked_links.py): the URLs to replace, in code order.
    track_links: bool = False
    tracked_urls: list[str] = []


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
                                  created_at, updated_at, track_links, tracked_urls)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16)
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
        campaign.track_links,
        campaign.tracked_urls,
    )
    assert row is not None
    await conn.execute("INSERT INTO campaign_counters (campaign_id) VALUES ($1)", row["id"])
    if status != "draft":
        await materialise_in(conn, row["id"])
        # Wake every daemon's supervisor: this campaign may be due now.
        await notify_in(conn, CommandKind.START, row["id"])
    created = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", row["id"])
    assert created is not None
    return created


async def create_campaign(
    db: Database, owner_id: str, campaign: CampaignInput, *, now: datetime
) -> Record:
    """Insert a campaign; "now" and "scheduled" ones get their recipients at once."""
    return await db.transaction(_create_campaign, owner_id, campaign, now)


_CAMPAIGN_COLUMNS = frozenset(
    {
        "account_id",
        "name",
        "message_type",
        "message_content",
        "media_url",
        "audience_type",
        "audience_config",
        "schedule_type",
        "scheduled_at",
        "throttle_config",
        "template_variables",
        "track_links",
        "tracked_urls",
    }
)


async def _check_references(
    conn: Connection, owner_id: str, account_id: str | None, audience: tuple[str, Any] | None
) -> None:
    if account_id is not None:
        owned = await conn.fetchval(
            "SELECT 1 FROM accounts WHERE id = $1 AND owner_id = $2", account_id, owner_id
        )
        if owned is None:
            raise InvalidReference("accountId", "accountId: no such WhatsApp account")
    if audience is not None and audience[0] == "segment":
        owned = await conn.fetchval(
            "SELECT 1 FROM segments WHERE id = $1::uuid AND owner_id = $2",
            audience[1].get("segmentId"),
            owner_id,
        )
        if owned is None:
            raise InvalidReference(
                "audienceConfig.segmentId", "audienceConfig.segmentId: no such segment"
            )


# Select this next to `c.*` to have everything `campaign_object` needs in one row.
COUNTER_COLUMNS = """coalesce(k.pending, 0) AS stat_pending, coalesce(k.sent, 0) AS stat_sent,
    coalesce(k.delivered, 0) AS stat_delivered, coalesce(k.read, 0) AS stat_read,
    coalesce(k.replied, 0) AS stat_replied, coalesce(k.failed, 0) AS stat_failed,
    coalesce(k.in_doubt, 0) AS stat_in_doubt, coalesce(k.clicked, 0) AS stat_clicked,
    CASE WHEN k.in_doubt > 0 THEN (
        SELECT max(r.sending_at) FROM campaign_recipients r
        WHERE r.campaign_id = c.id AND r.status = 'in_doubt'
    ) END AS in_doubt_last_sending_at"""

CAMPAIGN_WITH_COUNTERS = f"""SELECT c.*, {COUNTER_COLUMNS}
    FROM campaigns c LEFT JOIN campaign_counters k ON k.campaign_id = c.id"""


async def _campaign_with_counters(conn: Connection, campaign_id: Any) -> Record:
    row: Record | None = await conn.fetchrow(
        f"{CAMPAIGN_WITH_COUNTERS} WHERE c.id = $1", campaign_id
    )
    assert row is not None
    return row


async def _create_owned_campaign(
    conn: Connection, owner_id: str, campaign: CampaignInput, now: datetime
) -> Record:
    await _check_references(
        conn, owner_id, campaign.account_id, (campaign.audience_type, campaign.audience_config)
    )
    created = await _create_campaign(conn, owner_id, campaign, now)
    return await _campaign_with_counters(conn, created["id"])


async def create_owned_campaign(
    db: Database, owner_id: str, campaign: CampaignInput, *, now: datetime
) -> Record:
    """`create_campaign`, after checking the account (and segment) are the owner's;
    returns the row with its counters (see `engine.core.campaign_view`). InvalidReference."""
    return await db.transaction(_create_owned_campaign, owner_id, campaign, now)


async def list_campaigns(
    db: Database,
    owner_id: str,
    *,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Record]:
    """Newest first, keyset by (created_at, id)."""
    return await db.fetch(
        f"""{CAMPAIGN_WITH_COUNTERS}
            WHERE c.owner_id = $1 AND ($2::text IS NULL OR c.status = $2)
              AND ($3::timestamptz IS NULL OR (c.created_at, c.id) < ($3, $4::uuid))
            ORDER BY c.created_at DESC, c.id DESC LIMIT $5""",
        owner_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )


async def _update_campaign(
    conn: Connection,
    owner_id: str,
    campaign_id: str,
    decide: Callable[[Record], dict[str, Any]],
) -> Record | None:
    current = await conn.fetchrow(
        "SELECT * FROM campaigns WHERE id = $1 AND owner_id = $2 FOR UPDATE", campaign_id, owner_id
    )
    if current is None:
        return None
    changes = decide(current)
    if changes:
        await _check_references(
            conn,
            owner_id,
            changes.get("account_id"),
            (changes["audience_type"], changes["audience_config"])
            if "audience_type" in changes and "audience_config" in changes
            else None,
        )
        await conn.execute(
            f"""UPDATE campaigns SET {set_clause(changes, _CAMPAIGN_COLUMNS, 2)}, updated_at = now()
                WHERE id = $1""",
            campaign_id,
            *changes.values(),
        )
    return await _campaign_with_counters(conn, campaign_id)


async def update_campaign(
    db: Database,
    owner_id: str,
    campaign_id: str,
    decide: Callable[[Record], dict[str, Any]],
) -> Record | None:
    """Edit a campaign under its row lock. `decide(current row)` returns the column
    changes or raises (nothing is then written). None when there is no such campaign."""
    return await db.transaction(_update_campaign, owner_id, campaign_id, decide)


async def _delete_campaign(conn: Connection, owner_id: str, campaign_id: str) -> bool:
    status = await conn.fetchval(
        "SELECT status FROM campaigns WHERE id = $1 AND owner_id = $2 FOR UPDATE",
        campaign_id,
        owner_id,
    )
    if status is None:
        return False
    lifecycle.check("delete", status)
    await conn.execute("DELETE FROM campaigns WHERE id = $1", campaign_id)
    return True


async def delete_campaign(db: Database, owner_id: str, campaign_id: str) -> bool:
    """False when there is no such campaign; `lifecycle.TransitionRefused` while running."""
    return await db.transaction(_delete_campaign, owner_id, campaign_id)


async def _duplicate_campaign(
    conn: Connection, owner_id: str, campaign_id: str, now: datetime
) -> tuple[Record, int] | None:
    source = await conn.fetchrow(
        "SELECT * FROM campaigns WHERE id = $1 AND owner_id = $2", campaign_id, owner_id
    )
    if source is None:
        return None
    copy = CampaignInput(
        account_id=str(source["account_id"]),
        name=f"{source['name']} (Copy)",
        message_type=source["message_type"],
        message_content=source["message_content"],
        audience_type=source["audience_type"],
        audience_config=source["audience_config"],
        schedule_type="manual",  # a copy waits for its owner to start it
        throttle_config=source["throttle_config"],
        template_variables=source["template_variables"],
        media_url=source["media_url"],
        scheduled_at=None,
        track_links=source["track_links"],
        tracked_urls=source["tracked_urls"],
    )
    created = await _create_campaign(conn, owner_id, copy, now)
    size = await _audience_size(conn, owner_id, copy.audience_type, copy.audience_config)
    return await _campaign_with_counters(conn, created["id"]), size


async def duplicate_campaign(
    db: Database, owner_id: str, campaign_id: str, *, now: datetime
) -> tuple[Record, int] | None:
    """A new draft with the same settings; returns it and the audience size it would
    have now. None when there is no such campaign."""
    return await db.transaction(_duplicate_campaign, owner_id, campaign_id, now)


async def _list_recipients(
    conn: Connection, owner_id: str, campaign_id: str, status: str | None, after: int, limit: int
) -> list[Record] | None:
    owned = await conn.fetchval(
        "SELECT 1 FROM campaigns WHERE id = $1 AND owner_id = $2", campaign_id, owner_id
    )
    if owned is None:
        return None
    rows: list[Record] = await conn.fetch(
        """SELECT * FROM campaign_recipients
           WHERE campaign_id = $1 AND ($2::text IS NULL OR status = $2) AND id > $3
           ORDER BY id LIMIT $4""",
        campaign_id,
        status,
        after,
        limit,
    )
    return rows


async def list_recipients(
    db: Database, owner_id: str, campaign_id: str, *, status: str | None, after: int, limit: int
) -> list[Record] | None:
    """A campaign's recipients in id order; None when there is no such campaign."""
    return await db.run(_list_recipients, owner_id, campaign_id, status, after, limit)


async def campaign_row(
    db: Database, campaign_id: str, owner_id: str | None = None
) -> Record | None:
    """One campaign with its counters (`campaign_view.campaign_object` builds the
    object); scoped to `owner_id` when given."""
    return await db.fetchrow(
        f"{CAMPAIGN_WITH_COUNTERS} WHERE c.id = $1 AND ($2::text IS NULL OR c.owner_id = $2)",
        campaign_id,
        owner_id,
    )


async def campaign_rows(db: Database, campaign_ids: Sequence[str]) -> list[Record]:
    """Several campaigns with their counters, in one statement."""
    return await db.fetch(
        f"{CAMPAIGN_WITH_COUNTERS} WHERE c.id = ANY($1::uuid[])", list(campaign_ids)
    )
