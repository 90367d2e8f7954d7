"""What operators and owners see of the engine's health: `/healthz`, `/metrics` and the
queue health of one owner (the spec's "Monitoring").

The metrics snapshot carries no tenant identifiers (no account, campaign or user
ids): `/metrics` is scraped by operators, often into a shared system, so every
figure is summed over tenants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from engine.actors.sender_pool import LATENCY_BUCKETS
from engine.clock import WallClock
from engine.store import queue
from engine.store.database import Database

if TYPE_CHECKING:
    from engine.service.engine import EngineStatistics

log = logging.getLogger(__name__)


class MessageCounts(msgspec.Struct, frozen=True):
    """Since this daemon started, over every account."""

    sent: int
    failed: int
    retried: int
    requeued: int
    throttled: int


class LatencyHistogram(msgspec.Struct, frozen=True):
    bounds: tuple[float, ...]  # upper bounds in seconds; a last +Inf bucket is implied
    counts: tuple[int, ...]  # per bucket (not cumulative), len(bounds) + 1
    sum_seconds: float


class MonitoringSnapshot(msgspec.Struct, frozen=True):
    messages: MessageCounts
    sender_concurrency: int
    sender_slots_in_use: int
    # Marked sends put back pending unwritten: a pause, a rate change, a late turn.
    sends_released: int
    send_latency: LatencyHistogram
    campaigns_by_status: dict[str, int]  # all daemons
    running_campaigns: int  # all daemons
    local_campaign_actors: int  # this daemon
    pending_recipients: int  # in running campaigns, all daemons
    accounts_sending: int  # accounts with a running campaign, all daemons
    webhook_facts_received: int
    webhook_facts_applied: int
    webhook_batches_applied: int
    webhook_facts_queued: int
    webhook_facts_refused: int  # malformed or not storable (the parser's)
    webhook_facts_unmatched: int  # stored nowhere: no recipient they may apply to
    webhook_apply_errors: int  # batches the database failed (kept and retried)
    events_published: int
    events_dropped: int


class Monitoring:
    def __init__(
        self, db: Database, clock: WallClock, statistics: Callable[[], EngineStatistics]
    ) -> None:
        self._db = db
        self._clock = clock
        self._statistics = statistics

    async def database_answers(self) -> bool:
        try:
            return bool(await self._db.fetchval("SELECT 1") == 1)
        except Exception as error:  # any failure to reach the database means "not ready"
            log.warning("health check: database did not answer: %s", error)
            return False

    async def queue_health(self, owner_id: str) -> dict[str, int]:
        """`{waiting, active, failed, completed, processing_rate_per_minute,
        running_campaigns}` over the owner's campaigns."""
        return await queue.queue_health(self._db, owner_id, now=self._clock.now())

    async def snapshot(self) -> MonitoringSnapshot:
        stats = self._statistics()
        store = await queue.monitoring_snapshot(self._db)
        pool = stats.sender_pool
        accounts = pool.accounts.values()
        by_status = store.campaigns_by_status
        return MonitoringSnapshot(
            messages=MessageCounts(
                sent=sum(a.sent for a in accounts),
                failed=sum(a.failed for a in accounts),
                retried=sum(a.retried for a in accounts),
                requeued=sum(a.requeued for a in accounts),
                throttled=sum(a.throttled for a in accounts),
            ),
            sender_concurrency=pool.concurrency,
            sender_slots_in_use=pool.slots_in_use,
            sends_released=pool.released,
            send_latency=LatencyHistogram(
                LATENCY_BUCKETS, pool.latency_bucket_counts, pool.latency_sum_seconds
            ),
            campaigns_by_status=by_status,
            running_campaigns=by_status.get("running", 0),
            local_campaign_actors=len(stats.supervisor.running),
            pending_recipients=store.pending_recipients,
            accounts_sending=store.accounts_sending,
            webhook_facts_received=stats.webhooks.received,
            webhook_facts_applied=stats.webhooks.applied_facts,
            webhook_batches_applied=stats.webhooks.applied_batches,
            webhook_facts_queued=stats.webhooks.queued,
            webhook_facts_refused=stats.webhooks.refused,
            webhook_facts_unmatched=stats.webhooks.unmatched,
            webhook_apply_errors=stats.webhooks.apply_errors,
            events_published=stats.broadcaster.published,
            events_dropped=stats.broadcaster.dropped_at_inbox
            + stats.broadcaster.dropped_for_subscribers,
        )
