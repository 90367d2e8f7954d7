"""The campaign actor's reporting: what its sockets hear about it.

Progress and stats go out at the exact counts at which each threshold was
crossed (`engine.core.progress`), reading the stored counters only when a
batch of outcomes crosses one, never per message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from engine.actors.broadcaster import Broadcaster
from engine.clock import WallClock
from engine.core.campaign_view import (
    campaign_object,
    iso,
    metrics_payload,
    processed_count,
    stats_payload,
)
from engine.core.metrics import CampaignStats, progress_percent
from engine.core.progress import Final, crosses_threshold, milestones
from engine.events import (
    CampaignCancelled,
    CampaignCompleted,
    CampaignFailed,
    CampaignPaused,
    CampaignProgress,
    CampaignSampleSent,
    CampaignStarted,
    CampaignStatsChanged,
    CampaignVariantChosen,
    Event,
)
from engine.messages import CampaignEvent, Outcome
from engine.settings import EngineSettings
from engine.store import campaigns, recipients, variants
from engine.store.campaign_runs import CampaignPlan
from engine.store.database import Database

log = logging.getLogger(__name__)


class Reporter:
    def __init__(
        self,
        plan: CampaignPlan,
        *,
        db: Database,
        clock: WallClock,
        broadcaster: Broadcaster,
        settings: EngineSettings,
    ) -> None:
        self._plan = plan
        self._db = db
        self._clock = clock
        self._broadcaster = broadcaster
        self._settings = settings
        self.processed = 0  # recipients final, as last reported

    async def load(self) -> CampaignStats:
        stats = await recipients.campaign_stats(self._db, self._plan.id)
        self.processed = processed_count(stats, self._plan.total_recipients)
        return stats

    def started(self) -> None:
        plan = self._plan
        self._publish(
            CampaignStarted(
                campaign_id=plan.id,
                name=plan.name,
                total_recipients=plan.total_recipients,
                started_at=iso(self._clock.now()),
            )
        )

    def recorded(self, outcomes: Sequence[Outcome], latest: CampaignStats) -> None:
        """`latest`: the stored counts just after these outcomes (the recorder reads
        them in the same crossing, so no later batch is mixed in)."""
        finals: list[Final] = [o.status for o in outcomes if o.status in ("sent", "failed")]
        before = self.processed
        self.processed = before + len(finals)
        every_progress, every_stats = self._settings.progress_every, self._settings.stats_every
        if not crosses_threshold(
            before, len(finals), progress_every=every_progress, stats_every=every_stats
        ):
            return
        for milestone in milestones(
            before, finals, latest, progress_every=every_progress, stats_every=every_stats
        ):
            if milestone.progress:
                self._progress(milestone.processed, milestone.stats)
            if milestone.stats_due:
                self._publish(
                    CampaignStatsChanged(
                        campaign_id=self._plan.id,
                        stats=stats_payload(milestone.stats),
                        metrics=metrics_payload(milestone.stats, self._plan.total_recipients),
                    )
                )

    async def resync(self) -> None:
        """Counts moved outside the actor's own outcomes (in-doubt resolved)."""
        await self.load()

    async def completed(self) -> None:
        plan, now = self._plan, self._clock.now()
        stats = await recipients.campaign_stats(self._db, plan.id)
        processed = processed_count(stats, plan.total_recipients)
        if processed != self.processed or plan.total_recipients % self._settings.progress_every:
            self.processed = processed
            self._progress(processed, stats)
        row = await campaigns.campaign_row(self._db, plan.id)
        assert row is not None
        log.info("campaign %s: completed: %d sent, %d failed", plan.id, stats.sent, stats.failed)
        self._publish(
            CampaignCompleted(
                campaign_id=plan.id,
                campaign=campaign_object(
                    row, variant_counts=await variants.counts_of(self._db, row)
                ),
                completed_at=iso(now),
            )
        )

    def failed(self, error: str) -> None:
        log.error("campaign %s: failed: %s", self._plan.id, error)
        self._publish(
            CampaignFailed(campaign_id=self._plan.id, error=error, failed_at=iso(self._clock.now()))
        )

    async def paused(self, reason: str | None, at: datetime | None = None) -> None:
        stats = await recipients.campaign_stats(self._db, self._plan.id)
        self._publish(
            CampaignPaused(
                campaign_id=self._plan.id,
                processed_count=processed_count(stats, self._plan.total_recipients),
                total_recipients=self._plan.total_recipients,
                paused_at=iso(at or self._clock.now()),
                reason=reason,
            )
        )

    def cancelled(self, at: datetime | None) -> None:
        log.info("campaign %s: cancelled", self._plan.id)
        self._publish(CampaignCancelled(campaign_id=self._plan.id, cancelled_at=iso(at)))

    def sample_sent(self, sample_size: int, decide_at: datetime) -> None:
        log.info("campaign %s: A/B sample sent; winner due at %s", self._plan.id, iso(decide_at))
        self._publish(
            CampaignSampleSent(
                campaign_id=self._plan.id, sample_size=sample_size, decide_at=iso(decide_at)
            )
        )

    def variant_chosen(
        self, metric: str, winner: int, values: list[float], decided_at: datetime
    ) -> None:
        names = self._plan.variant_names
        log.info(
            "campaign %s: A/B winner %r by %s %s", self._plan.id, names[winner], metric, values
        )
        self._publish(
            CampaignVariantChosen(
                campaign_id=self._plan.id,
                variant=names[winner],
                variant_index=winner,
                metric=metric,
                values=dict(zip(names, values, strict=True)),
                decided_at=iso(decided_at),
            )
        )

    def _progress(self, processed: int, stats: CampaignStats) -> None:
        total = self._plan.total_recipients
        self._publish(
            CampaignProgress(
                campaign_id=self._plan.id,
                progress=progress_percent(processed, total),
                processed_count=processed,
                total_recipients=total,
                sent_count=stats.sent,
                failed_count=stats.failed,
            )
        )
        if processed % 1000 == 0 or processed == total:
            log.info("campaign %s: %d/%d processed", self._plan.id, processed, total)

    def _publish(self, event: Event) -> None:
        self._broadcaster.publish(CampaignEvent(self._plan.owner_id, event))
