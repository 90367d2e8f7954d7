"""Queue health (the spec's \"Monitoring\") and the numbers behind /metrics."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from engine.store.database import Database


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


class StoreSnapshot(msgspec.Struct, frozen=True):
    campaigns_by_status: dict[str, int]
    pending_recipients: int  # in running campaigns
    accounts_sending: int  # accounts with a running campaign


async def monitoring_snapshot(db: Database) -> StoreSnapshot:
    """Numbers for /metrics, summed over every owner (no tenant identifiers), in one
    statement."""
    row = await db.fetchrow(
        """SELECT
               (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
                   (SELECT status, count(*) AS n FROM campaigns GROUP BY status) s) AS campaigns,
               (SELECT coalesce(sum(k.pending), 0) FROM campaigns c
                    JOIN campaign_counters k ON k.campaign_id = c.id
                    WHERE c.status = 'running') AS pending,
               (SELECT count(DISTINCT account_id) FROM campaigns
                    WHERE status = 'running') AS accounts"""
    )
    assert row is not None
    return StoreSnapshot(
        campaigns_by_status={str(k): int(v) for k, v in row["campaigns"].items()},
        pending_recipients=int(row["pending"]),
        accounts_sending=int(row["accounts"]),
    )
