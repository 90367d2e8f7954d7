"""Accounts, contacts, segments and campaign creation: the rows users manage.

Every function is scoped by `owner_id`; a row of another owner is invisible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from engine import lifecycle
from engine.store.campaigns import notify_in
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
        # Wake every daemon's supervisor: this campaign may be due now.
        await notify_in(conn, "start", row["id"])
    created = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", row["id"])
    assert created is not None
    return created


async def create_campaign(
    db: Database, owner_id: str, campaign: CampaignInput, *, now: datetime
) -> Record:
    """Insert a campaign; "now" and "scheduled" ones get their recipients at once."""
    return await db.transaction(_create_campaign, owner_id, campaign, now)


# --- queries and edits for the HTTP API ---------------------------------------------
# Each is one logical operation (one crossing into asyncpg), scoped by owner_id.


class InvalidReference(Exception):
    """A request names a row the caller does not own (or that does not exist)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class InUse(Exception):
    """A row other rows still depend on."""


class DuplicatePhone(Exception):
    """Another contact of the same owner has this phone number."""


_ACCOUNT_COLUMNS = frozenset(
    {"name", "phone_number_id", "access_token", "api_url", "status", "messages_per_second"}
)
_CONTACT_COLUMNS = frozenset(
    {"phone", "first_name", "last_name", "email", "company", "tags", "attributes", "opted_out"}
)
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
    }
)


def _set_clause(changes: dict[str, Any], allowed: frozenset[str], first: int) -> str:
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    return ", ".join(f"{column} = ${first + i}" for i, column in enumerate(changes))


async def list_accounts(
    db: Database, owner_id: str, *, after: str | None, limit: int
) -> list[Record]:
    return await db.fetch(
        """SELECT * FROM accounts WHERE owner_id = $1 AND ($2::uuid IS NULL OR id > $2::uuid)
           ORDER BY id LIMIT $3""",
        owner_id,
        after,
        limit,
    )


async def get_account(db: Database, owner_id: str, account_id: str) -> Record | None:
    return await db.fetchrow(
        "SELECT * FROM accounts WHERE id = $1 AND owner_id = $2", account_id, owner_id
    )


async def update_account(
    db: Database, owner_id: str, account_id: str, changes: dict[str, Any]
) -> Record | None:
    if not changes:
        return await get_account(db, owner_id, account_id)
    return await db.fetchrow(
        f"""UPDATE accounts SET {_set_clause(changes, _ACCOUNT_COLUMNS, 3)}, updated_at = now()
            WHERE id = $1 AND owner_id = $2 RETURNING *""",
        account_id,
        owner_id,
        *changes.values(),
    )


async def _delete_account(conn: Connection, owner_id: str, account_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM accounts WHERE id = $1 AND owner_id = $2 FOR UPDATE", account_id, owner_id
    )
    if found is None:
        return False
    used: int = await conn.fetchval(
        "SELECT count(*) FROM campaigns WHERE account_id = $1", account_id
    )
    if used:
        raise InUse(
            f"The account is used by {used} campaign(s); delete them before deleting the account"
        )
    await conn.execute("DELETE FROM accounts WHERE id = $1", account_id)
    return True


async def delete_account(db: Database, owner_id: str, account_id: str) -> bool:
    """False when there is no such account; InUse while campaigns reference it."""
    return await db.transaction(_delete_account, owner_id, account_id)


async def list_contacts(
    db: Database, owner_id: str, *, after: str | None, limit: int, tag: str | None = None
) -> list[Record]:
    return await db.fetch(
        """SELECT * FROM contacts WHERE owner_id = $1 AND ($2::uuid IS NULL OR id > $2::uuid)
             AND ($4::text IS NULL OR tags @> ARRAY[$4::text])
           ORDER BY id LIMIT $3""",
        owner_id,
        after,
        limit,
        tag,
    )


async def get_contact(db: Database, owner_id: str, contact_id: str) -> Record | None:
    return await db.fetchrow(
        "SELECT * FROM contacts WHERE id = $1 AND owner_id = $2", contact_id, owner_id
    )


async def _update_contact(
    conn: Connection, owner_id: str, contact_id: str, changes: dict[str, Any]
) -> Record | None:
    if "phone" in changes:
        taken = await conn.fetchval(
            "SELECT 1 FROM contacts WHERE owner_id = $1 AND phone = $2 AND id <> $3",
            owner_id,
            changes["phone"],
            contact_id,
        )
        if taken:
            raise DuplicatePhone(changes["phone"])
    row: Record | None = await conn.fetchrow(
        f"""UPDATE contacts SET {_set_clause(changes, _CONTACT_COLUMNS, 3)}, updated_at = now()
            WHERE id = $1 AND owner_id = $2 RETURNING *""",
        contact_id,
        owner_id,
        *changes.values(),
    )
    return row


async def update_contact(
    db: Database, owner_id: str, contact_id: str, changes: dict[str, Any]
) -> Record | None:
    """None when there is no such contact; DuplicatePhone when the phone is taken."""
    if not changes:
        return await get_contact(db, owner_id, contact_id)
    return await db.transaction(_update_contact, owner_id, contact_id, changes)


async def delete_contact(db: Database, owner_id: str, contact_id: str) -> bool:
    status = await db.execute(
        "DELETE FROM contacts WHERE id = $1 AND owner_id = $2", contact_id, owner_id
    )
    return status.endswith(" 1")


# Contacts an audience reaches now: not opted out, matching everyone, the tags or the ids.
_AUDIENCE_SIZE = """SELECT count(*) FROM contacts k
    WHERE k.owner_id = $1 AND NOT k.opted_out
      AND ($2::boolean
           OR k.tags && coalesce($3::text[], '{}')
           OR k.id = ANY(coalesce($4::uuid[], '{}')))"""

_SEGMENT_WITH_SIZE = """SELECT s.*, (SELECT count(*) FROM contacts k
        WHERE k.owner_id = s.owner_id AND NOT k.opted_out
          AND (k.tags && ARRAY(SELECT jsonb_array_elements_text(coalesce(s.filter -> 'tags', '[]')))
               OR k.id = ANY(ARRAY(SELECT jsonb_array_elements_text(
                                        coalesce(s.filter -> 'contactIds', '[]'))::uuid)))
    ) AS size
    FROM segments s"""


async def _create_segment_sized(
    conn: Connection, owner_id: str, name: str, filter: dict[str, Any]
) -> Record:
    segment_id = await conn.fetchval(
        "INSERT INTO segments (owner_id, name, filter) VALUES ($1, $2, $3) RETURNING id",
        owner_id,
        name,
        filter,
    )
    row: Record | None = await conn.fetchrow(f"{_SEGMENT_WITH_SIZE} WHERE s.id = $1", segment_id)
    assert row is not None
    return row


async def create_segment_sized(
    db: Database, owner_id: str, *, name: str, filter: dict[str, Any]
) -> Record:
    """Like `create_segment`, with a `size` column: the contacts it matches now."""
    return await db.transaction(_create_segment_sized, owner_id, name, filter)


async def list_segments(
    db: Database, owner_id: str, *, after: str | None, limit: int
) -> list[Record]:
    return await db.fetch(
        f"""{_SEGMENT_WITH_SIZE} WHERE s.owner_id = $1 AND ($2::uuid IS NULL OR s.id > $2::uuid)
            ORDER BY s.id LIMIT $3""",
        owner_id,
        after,
        limit,
    )


async def get_segment(db: Database, owner_id: str, segment_id: str) -> Record | None:
    return await db.fetchrow(
        f"{_SEGMENT_WITH_SIZE} WHERE s.id = $1 AND s.owner_id = $2", segment_id, owner_id
    )


async def delete_segment(db: Database, owner_id: str, segment_id: str) -> bool:
    status = await db.execute(
        "DELETE FROM segments WHERE id = $1 AND owner_id = $2", segment_id, owner_id
    )
    return status.endswith(" 1")


async def _audience_size(
    conn: Connection, owner_id: str, audience_type: str, audience_config: dict[str, Any]
) -> int:
    tags: list[str] | None = None
    ids: list[str] | None = None
    if audience_type == "segment":
        segment_filter = await conn.fetchval(
            "SELECT filter FROM segments WHERE id = $1::uuid AND owner_id = $2",
            audience_config.get("segmentId"),
            owner_id,
        )
        if segment_filter is None:
            return 0
        tags, ids = segment_filter.get("tags"), segment_filter.get("contactIds")
    elif audience_type == "tags":
        tags = audience_config.get("tags")
    elif audience_type == "contacts":
        ids = audience_config.get("contactIds")
    size: int = await conn.fetchval(_AUDIENCE_SIZE, owner_id, audience_type == "all", tags, ids)
    return size


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


_CAMPAIGN_WITH_COUNTERS = """SELECT c.*, coalesce(k.pending, 0) AS stat_pending,
    coalesce(k.sent, 0) AS stat_sent, coalesce(k.delivered, 0) AS stat_delivered,
    coalesce(k.read, 0) AS stat_read, coalesce(k.replied, 0) AS stat_replied,
    coalesce(k.failed, 0) AS stat_failed, coalesce(k.in_doubt, 0) AS stat_in_doubt
    FROM campaigns c LEFT JOIN campaign_counters k ON k.campaign_id = c.id"""


async def _campaign_with_counters(conn: Connection, campaign_id: Any) -> Record:
    row: Record | None = await conn.fetchrow(
        f"{_CAMPAIGN_WITH_COUNTERS} WHERE c.id = $1", campaign_id
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
    returns the row with its counters (see `engine.campaign_view`). InvalidReference."""
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
        f"""{_CAMPAIGN_WITH_COUNTERS}
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
            f"""UPDATE campaigns SET {_set_clause(changes, _CAMPAIGN_COLUMNS, 2)}, updated_at = now()
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


async def queue_health(db: Database, owner_id: str, *, now: datetime) -> dict[str, int]:
    """The spec's "queue health", from the owner's recipients (one statement).

    waiting: pending in scheduled or running campaigns; active: being sent; failed;
    completed: accepted by the API (sent or beyond); processing_rate_per_minute:
    recipients sent or failed in the last minute; running_campaigns.
    """
    row = await db.fetchrow(
        """WITH mine AS (
               SELECT c.id, c.status, c.updated_at, k.pending, k.sent, k.failed
               FROM campaigns c JOIN campaign_counters k ON k.campaign_id = c.id
               WHERE c.owner_id = $1
           ), active AS (
               SELECT count(*) AS n FROM campaign_recipients r JOIN mine m ON m.id = r.campaign_id
               WHERE m.status IN ('scheduled', 'running') AND r.status = 'sending'
           ), recent AS (
               -- Only campaigns touched in the last minute can have sent in it.
               SELECT count(*) AS n FROM campaign_recipients r JOIN mine m ON m.id = r.campaign_id
               WHERE (m.status = 'running' OR m.updated_at >= $2)
                 AND (r.sent_at >= $2 OR r.failed_at >= $2)
           )
           SELECT
               coalesce((SELECT sum(pending) FROM mine WHERE status IN ('scheduled', 'running')), 0)
                   - (SELECT n FROM active) AS waiting,
               (SELECT n FROM active) AS active,
               coalesce((SELECT sum(failed) FROM mine), 0) AS failed,
               coalesce((SELECT sum(sent) FROM mine), 0) AS completed,
               (SELECT n FROM recent) AS processing_rate_per_minute,
               (SELECT count(*) FROM mine WHERE status = 'running') AS running_campaigns""",
        owner_id,
        now - timedelta(minutes=1),
    )
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def monitoring_snapshot(db: Database) -> dict[str, Any]:
    """Numbers for /metrics, all owners: campaigns by status, and recipients of
    running campaigns by account and state (one statement)."""
    row = await db.fetchrow(
        """SELECT
               (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
                   (SELECT status, count(*) AS n FROM campaigns GROUP BY status) s) AS campaigns,
               (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'account', a.account_id, 'pending', a.pending, 'sent', a.sent,
                        'failed', a.failed, 'in_doubt', a.in_doubt)), '[]') FROM
                   (SELECT c.account_id::text AS account_id, sum(k.pending) AS pending,
                           sum(k.sent) AS sent, sum(k.failed) AS failed, sum(k.in_doubt) AS in_doubt
                    FROM campaigns c JOIN campaign_counters k ON k.campaign_id = c.id
                    WHERE c.status = 'running' GROUP BY c.account_id) a) AS running_by_account"""
    )
    assert row is not None
    return {"campaigns": row["campaigns"], "running_by_account": row["running_by_account"]}
