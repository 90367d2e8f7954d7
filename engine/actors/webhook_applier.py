"""Applies webhook facts (statuses, replies) in batches.

The HTTP handler answers WhatsApp at once and queues the facts here; this actor
applies everything queued in one statement per flush, then tells the campaigns
touched: a `campaign:stats` event each (so webhooks produce at most one event
per campaign per flush), and a recheck where a send in doubt was resolved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
import trio

from engine.actors.broadcaster import Broadcaster
from engine.core.campaign_view import (
    metrics_payload,
    stats_from_row,
    stats_payload,
)
from engine.events import CampaignStatsChanged
from engine.messages import CampaignEvent, CommandKind, StatusUpdate
from engine.settings import WebhookSettings
from engine.store import campaign_runs, campaigns, statuses
from engine.store.database import Database

log = logging.getLogger(__name__)


class WebhookApplierStatistics(msgspec.Struct, frozen=True):
    received: int
    applied_batches: int
    applied_facts: int
    queued: int


class WebhookApplier:
    def __init__(self, max_queued: int = 200_000) -> None:
        self._max_queued = max_queued
        self._queue: list[StatusUpdate] = []
        self._arrived = trio.Event()
        self._received = 0
        self._applied_batches = 0
        self._applied_facts = 0

    def submit(self, updates: Sequence[StatusUpdate]) -> bool:
        """Queue facts; False (nothing queued) when the backlog is full, so the
        caller answers 503 and WhatsApp delivers them again later."""
        if len(self._queue) + len(updates) > self._max_queued:
            return False
        self._queue.extend(updates)
        self._received += len(updates)
        self._arrived.set()
        return True

    def statistics(self) -> WebhookApplierStatistics:
        return WebhookApplierStatistics(
            received=self._received,
            applied_batches=self._applied_batches,
            applied_facts=self._applied_facts,
            queued=len(self._queue),
        )

    async def serve(
        self, db: Database, broadcaster: Broadcaster, settings: WebhookSettings
    ) -> None:
        while True:
            await self._arrived.wait()
            # Let a burst of webhooks gather into one statement.
            await trio.sleep(settings.flush_interval_ms / 1000)
            batch = self._queue[: settings.max_batch]
            del self._queue[: settings.max_batch]
            if not self._queue:
                self._arrived = trio.Event()
            with trio.CancelScope(shield=True):
                applied = await statuses.apply_status_updates(db, batch)
                if applied.campaigns:
                    await self._announce(db, broadcaster, applied.campaigns)
                for campaign_id in applied.resolved_in_doubt:
                    # Its actor may be waiting for exactly this to complete it.
                    await campaign_runs.notify(db, CommandKind.RECHECK, campaign_id)
            self._applied_batches += 1
            self._applied_facts += len(batch)

    async def _announce(
        self, db: Database, broadcaster: Broadcaster, campaign_ids: list[str]
    ) -> None:
        rows = await campaigns.campaign_rows(db, campaign_ids)
        for row in rows:
            stats = stats_from_row(row)
            campaign_id = str(row["id"])
            broadcaster.publish(
                CampaignEvent(
                    row["owner_id"],
                    CampaignStatsChanged(
                        campaign_id=campaign_id,
                        stats=stats_payload(stats),
                        metrics=metrics_payload(stats, int(row["total_recipients"])),
                    ),
                )
            )


async def run(
    db: Database,
    broadcaster: Broadcaster,
    settings: WebhookSettings,
    *,
    task_status: trio.TaskStatus[WebhookApplier] = trio.TASK_STATUS_IGNORED,
) -> None:
    applier = WebhookApplier()
    task_status.started(applier)
    await applier.serve(db, broadcaster, settings)
