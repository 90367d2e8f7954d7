"""Campaign leases: which daemon owns a running campaign, until when.

Only the owner may mark recipients `sending` (see `recipients.mark_sending`), so a
daemon that lost its lease cannot send even if it has not noticed yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from engine.store.database import Database


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
