"""Queue health (the spec's \"Monitoring\") and the numbers behind /metrics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

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
