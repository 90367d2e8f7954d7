"""Campaign rows: control transitions, what the engine reads to run one, and leases.

A lease row says which daemon owns a running campaign until when. Only the
owner may mark recipients `sending` (see `recipients.mark_sending`), so a
daemon that lost its lease cannot send even if it has not noticed yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from engine import lifecycle
from engine.store.database import Connection, Database, Record
from engine.store.recipients import materialise_in

# NOTIFY channel: every daemon's supervisor listens, so a command issued through
# any daemon reaches the one that owns the campaign. Payload: "<action>:<campaign id>".
COMMAND_CHANNEL = "campaign_engine_commands"


class Throttle(msgspec.Struct, frozen=True):
    messagesPerMinute: float = 20.0
    batchSize: int = 100
    delayBetweenBatches: float = 0.0


class CampaignPlan(msgspec.Struct, frozen=True):
    """What a campaign actor needs to run a campaign, read once at start."""

    id: str
    owner_id: str
    name: str
    status: str
    message_type: str
    message_content: Any
    media_url: str | None
    template_variables: dict[str, str]
    throttle: Throttle
    total_recipients: int
    batch_cursor: int
    started_at: datetime | None
    account_id: str
    account_status: str
    account_api_url: str | None
    account_phone_number_id: str
    account_access_token: str
    account_messages_per_second: int


class NotFound(Exception):
    """No such campaign, or it belongs to someone else."""


def throttle_from_json(value: Any) -> Throttle:
    return msgspec.convert(value or {}, Throttle)


_ACTION_UPDATES = {
    # start: "now" — a scheduled campaign started by hand starts at once.
    "start": "status = 'scheduled', scheduled_at = $2, error = NULL",
    "pause": "status = 'paused', paused_at = $2, pause_reason = $3",
    "resume": "status = 'scheduled', scheduled_at = $2, pause_reason = NULL",
    "cancel": "status = 'cancelled', cancelled_at = $2",
}


async def _apply_action(
    conn: Connection,
    campaign_id: str,
    owner_id: str,
    action: lifecycle.CampaignAction,
    now: datetime,
    reason: str | None,
) -> tuple[str, Record]:
    current = await conn.fetchrow(
        "SELECT status FROM campaigns WHERE id = $1 AND owner_id = $2 FOR UPDATE",
        campaign_id,
        owner_id,
    )
    if current is None:
        raise NotFound(campaign_id)
    previous: lifecycle.CampaignStatus = current["status"]
    lifecycle.check(action, previous)
    row = await conn.fetchrow(
        f"UPDATE campaigns SET {_ACTION_UPDATES[action]}, updated_at = $2 WHERE id = $1 RETURNING *",
        campaign_id,
        now,
        *([reason] if action == "pause" else []),
    )
    if action == "start":
        await materialise_in(conn, campaign_id)
    await notify_in(conn, action, campaign_id)
    assert row is not None
    return previous, row


async def apply_action(
    db: Database,
    campaign_id: str,
    owner_id: str,
    action: lifecycle.CampaignAction,
    *,
    now: datetime,
    reason: str | None = None,
) -> tuple[str, Record]:
    """Apply a control action for its owner; returns (previous status, new row).

    Raises NotFound, or `lifecycle.TransitionRefused` with the spec's message.
    Notifies every daemon in the same transaction.
    """
    return await db.transaction(_apply_action, campaign_id, owner_id, action, now, reason)


async def notify_in(conn: Connection, action: str, campaign_id: object) -> None:
    """Announce a command to every daemon; inside a transaction, at its commit."""
    await conn.execute("SELECT pg_notify($1, $2)", COMMAND_CHANNEL, f"{action}:{campaign_id}")


async def notify(db: Database, action: str, campaign_id: str) -> None:
    await db.run(notify_in, action, campaign_id)


async def load_plan(db: Database, campaign_id: str) -> CampaignPlan | None:
    row = await db.fetchrow(
        """SELECT c.*, a.status AS account_status, a.api_url AS account_api_url,
                  a.phone_number_id AS account_phone_number_id,
                  a.access_token AS account_access_token,
                  a.messages_per_second AS account_messages_per_second
           FROM campaigns c JOIN accounts a ON a.id = c.account_id
           WHERE c.id = $1""",
        campaign_id,
    )
    if row is None:
        return None
    return CampaignPlan(
        id=str(row["id"]),
        owner_id=row["owner_id"],
        name=row["name"],
        status=row["status"],
        message_type=row["message_type"],
        message_content=row["message_content"],
        media_url=row["media_url"],
        template_variables={k: str(v) for k, v in (row["template_variables"] or {}).items()},
        throttle=throttle_from_json(row["throttle_config"]),
        total_recipients=row["total_recipients"],
        batch_cursor=row["batch_cursor"],
        started_at=row["started_at"],
        account_id=str(row["account_id"]),
        account_status=row["account_status"],
        account_api_url=row["account_api_url"],
        account_phone_number_id=row["account_phone_number_id"],
        account_access_token=row["account_access_token"],
        account_messages_per_second=row["account_messages_per_second"],
    )


async def load_throttle(db: Database, campaign_id: str) -> Throttle:
    value = await db.fetchval("SELECT throttle_config FROM campaigns WHERE id = $1", campaign_id)
    return throttle_from_json(value)


async def begin_running(db: Database, campaign_id: str, *, now: datetime) -> bool:
    """scheduled → running (a running campaign taken over stays running). False when
    the campaign was paused or cancelled meanwhile."""
    row = await db.fetchrow(
        """UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, $2),
                  updated_at = $2
           WHERE id = $1 AND status IN ('scheduled', 'running') RETURNING id""",
        campaign_id,
        now,
    )
    return row is not None


async def finish(
    db: Database, campaign_id: str, status: str, *, now: datetime, error: str | None = None
) -> bool:
    """running → completed | failed. False when a command changed the status first."""
    column = {"completed": "completed_at", "failed": "failed_at"}[status]
    row = await db.fetchrow(
        f"""UPDATE campaigns SET status = $2, {column} = $3, error = $4, updated_at = $3
            WHERE id = $1 AND status = 'running' RETURNING id""",
        campaign_id,
        status,
        now,
        error,
    )
    return row is not None


async def pause_by_engine(db: Database, campaign_id: str, *, reason: str, now: datetime) -> bool:
    """running → paused, for an account-level error the operator must fix."""
    row = await db.fetchrow(
        """UPDATE campaigns SET status = 'paused', paused_at = $2, pause_reason = $3, updated_at = $2
           WHERE id = $1 AND status = 'running' RETURNING id""",
        campaign_id,
        now,
        reason,
    )
    return row is not None


async def campaign_status(
    db: Database, campaign_id: str
) -> tuple[str, datetime | None, str | None]:
    """(status, paused/cancelled time, pause reason)."""
    row = await db.fetchrow(
        "SELECT status, coalesce(cancelled_at, paused_at) AS at, pause_reason FROM campaigns WHERE id = $1",
        campaign_id,
    )
    if row is None:
        raise NotFound(campaign_id)
    return row["status"], row["at"], row["pause_reason"]


async def runs_here(db: Database, campaign_id: str, *, lease_owner: str) -> bool:
    """Still `running`, and still this daemon's to run."""
    owned: bool | None = await db.fetchval(
        """SELECT true FROM campaigns c
           JOIN campaign_leases l ON l.campaign_id = c.id AND l.owner = $2
           WHERE c.id = $1 AND c.status = 'running'""",
        campaign_id,
        lease_owner,
    )
    return bool(owned)


async def save_cursor(db: Database, campaign_id: str, cursor: int) -> None:
    await db.execute(
        "UPDATE campaigns SET batch_cursor = greatest(batch_cursor, $2) WHERE id = $1",
        campaign_id,
        cursor,
    )


async def try_acquire_lease(
    db: Database, campaign_id: str, *, owner: str, now: datetime, ttl: float
) -> bool:
    row = await db.fetchrow(
        """INSERT INTO campaign_leases (campaign_id, owner, expires_at) VALUES ($1, $2, $3)
           ON CONFLICT (campaign_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
           WHERE campaign_leases.expires_at < $4 OR campaign_leases.owner = excluded.owner
           RETURNING owner""",
        campaign_id,
        owner,
        now + timedelta(seconds=ttl),
        now,
    )
    return row is not None


async def renew_leases(
    db: Database, campaign_ids: Sequence[str], *, owner: str, now: datetime, ttl: float
) -> set[str]:
    """Extend our leases; returns the campaigns still ours."""
    rows = await db.fetch(
        """UPDATE campaign_leases SET expires_at = $3
           WHERE campaign_id = ANY($1::uuid[]) AND owner = $2 RETURNING campaign_id""",
        list(campaign_ids),
        owner,
        now + timedelta(seconds=ttl),
    )
    return {str(r["campaign_id"]) for r in rows}


async def release_lease(db: Database, campaign_id: str, *, owner: str) -> None:
    await db.execute(
        "DELETE FROM campaign_leases WHERE campaign_id = $1 AND owner = $2", campaign_id, owner
    )


async def claimable_campaigns(
    db: Database, *, now: datetime, limit: int, exclude: Sequence[str]
) -> list[str]:
    """Campaigns due to run that no live daemon owns: scheduled ones whose time has
    come, and running ones whose owner's lease expired (it died)."""
    rows = await db.fetch(
        """SELECT c.id FROM campaigns c
           LEFT JOIN campaign_leases l ON l.campaign_id = c.id
           WHERE ((c.status = 'scheduled' AND c.scheduled_at <= $1) OR c.status = 'running')
             AND (l.campaign_id IS NULL OR l.expires_at < $1)
             AND NOT (c.id = ANY($3::uuid[]))
           ORDER BY c.status = 'running' DESC, c.scheduled_at
           LIMIT $2""",
        now,
        limit,
        list(exclude),
    )
    return [str(r["id"]) for r in rows]


async def next_wake_at(db: Database, *, now: datetime) -> datetime | None:
    """The next moment something becomes claimable: a scheduled time or a lease expiry."""
    moment: datetime | None = await db.fetchval(
        """SELECT least(
               (SELECT min(scheduled_at) FROM campaigns
                 WHERE status = 'scheduled' AND scheduled_at > $1),
               (SELECT min(l.expires_at) FROM campaign_leases l
                  JOIN campaigns c ON c.id = l.campaign_id
                 WHERE c.status IN ('running', 'scheduled') AND l.expires_at > $1))""",
        now,
    )
    return moment
