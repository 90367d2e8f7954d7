"""Applies webhook facts (statuses, replies, signals) in batches.

The HTTP handler answers WhatsApp at once and queues the facts here; this actor
applies everything queued in one statement per flush, then tells the campaigns
touched: a `campaign:stats` event each (so webhooks produce at most one event
per campaign per flush), and a recheck where a send in doubt was resolved.
Signals (template, quality and account updates) are applied in one transaction
per flush (engine/store/account_events.py): logged, and the campaigns they pause
or resume announced (`campaign:paused` for those no actor was running,
`campaign:resumed`). When the database fails, nothing is lost: the facts stay
queued and the batch is retried with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
import trio

from engine.actors.broadcaster import Broadcaster
from engine.clock import WallClock
from engine.core.campaign_view import iso, processed_count, stats_changed, stats_from_row
from engine.events import CampaignPaused, CampaignResumed
from engine.messages import CampaignEvent, CommandKind, StatusUpdate, WebhookFact
from engine.settings import WebhookSettings
from engine.store import account_events, campaign_runs, campaigns, statuses
from engine.store.account_events import AppliedSignals
from engine.store.database import Database

log = logging.getLogger(__name__)

# After the database fails a batch: the first retry, and the longest wait between two.
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30.0


class WebhookApplierStatistics(msgspec.Struct, frozen=True):
    received: int
    applied_batches: int
    applied_facts: int
    queued: int
    refused: int  # facts the parser refused: malformed, or not storable
    unmatched: int  # applied facts that matched no recipient (not ours, or not allowed)
    apply_errors: int  # times the database failed a batch (its facts stay queued)
    signals_logged: int = 0  # account event log rows written
    signals_unmatched: int = 0  # signals that named no account (also in `unmatched`)


class WebhookApplier:
    def __init__(self, max_queued: int = 200_000) -> None:
        self._max_queued = max_queued
        self._queue: list[WebhookFact] = []
        self._arrived = trio.Event()
        # Work left over when the database failed after a batch was applied.
        self._to_announce: set[str] = set()
        self._signals_to_announce: list[AppliedSignals] = []
        self._to_recheck: set[str] = set()
        self._received = 0
        self._refused = 0
        self._unmatched = 0
        self._applied_batches = 0
        self._applied_facts = 0
        self._apply_errors = 0
        self._signals_logged = 0
        self._signals_unmatched = 0

    def submit(self, updates: Sequence[WebhookFact], *, refused: int = 0) -> bool:
        """Queue facts, and count `refused` ones the caller could not use; False
        (nothing queued or counted) when the backlog is full, so the caller answers
        503 and WhatsApp delivers them again later."""
        if len(self._queue) + len(updates) > self._max_queued:
            return False
        self._refused += refused
        if updates:
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
            refused=self._refused,
            unmatched=self._unmatched,
            apply_errors=self._apply_errors,
            signals_logged=self._signals_logged,
            signals_unmatched=self._signals_unmatched,
        )

    async def serve(
        self,
        db: Database,
        broadcaster: Broadcaster,
        settings: WebhookSettings,
        clock: WallClock | None = None,
    ) -> None:
        clock = clock or WallClock()
        retry_in = _RETRY_FIRST_SECONDS
        while True:
            await self._arrived.wait()
            if len(self._queue) < settings.max_batch:
                # Let a burst of webhooks gather into one statement.
                await trio.sleep(settings.flush_interval_ms / 1000)
            try:
                with trio.CancelScope(shield=True):
                    await self._flush(db, broadcaster, settings.max_batch, clock)
            except statuses.DATABASE_ERRORS as error:
                # Never fatal: the facts stay queued (a full queue answers 503) and
                # the batch is tried again.
                self._apply_errors += 1
                log.warning(
                    "webhook facts: the database failed (%s: %s); %d facts kept, "
                    "retrying in %.1f s",
                    type(error).__name__,
                    error,
                    len(self._queue),
                    retry_in,
                )
                await trio.sleep(retry_in)
                retry_in = min(retry_in * 2, _RETRY_MAX_SECONDS)
            else:
                retry_in = _RETRY_FIRST_SECONDS

    async def _flush(
        self, db: Database, broadcaster: Broadcaster, max_batch: int, clock: WallClock
    ) -> None:
        batch = self._queue[:max_batch]
        changed: AppliedSignals | None = None
        if batch:
            updates = [f for f in batch if isinstance(f, StatusUpdate)]
            signals = [f for f in batch if not isinstance(f, StatusUpdate)]
            # Statuses first, as applying them twice changes nothing: if the signals
            # then fail (their transaction leaves nothing), the batch is retried.
            applied = await statuses.apply_status_updates(db, updates)
            if signals:
                changed = await account_events.apply_signals(db, signals, now=clock.now())
            # Only submit() touches the queue meanwhile, and it only appends.
            del self._queue[: len(batch)]
            self._applied_batches += 1
            self._applied_facts += len(batch)
            self._unmatched += len(updates) - applied.matched
            self._to_announce.update(applied.campaigns)
            self._to_recheck.update(applied.resolved_in_doubt)
        if changed is not None:
            self._signals_logged += changed.logged
            self._signals_unmatched += changed.unmatched
            self._unmatched += changed.unmatched  # in /metrics' unmatched, with the statuses
            self._signals_to_announce.append(changed)
        while self._signals_to_announce:
            await self._announce_signals(db, broadcaster, self._signals_to_announce[0])
            del self._signals_to_announce[0]
        for campaign_id in sorted(self._to_recheck):
            # Its actor may be waiting for exactly this to complete it.
            await campaign_runs.notify(db, CommandKind.RECHECK, campaign_id)
            self._to_recheck.discard(campaign_id)
        if self._to_announce:
            await self._announce(db, broadcaster, sorted(self._to_announce))
            self._to_announce.clear()
        if not self._queue:
            self._arrived = trio.Event()

    async def _announce_signals(
        self, db: Database, broadcaster: Broadcaster, changed: AppliedSignals
    ) -> None:
        """A running campaign's actor says it paused when it stops; for the others
        (scheduled), and for every resume, nobody else would. The rows are read before
        anything is published, so a database error announces nothing twice."""
        quiet = [c for c in changed.paused if c.previous == "scheduled"]
        rows = (
            {
                str(r["id"]): r
                for r in await campaigns.campaign_rows(db, [c.campaign_id for c in quiet])
            }
            if quiet
            else {}
        )
        for change in changed.resumed:
            broadcaster.publish(
                CampaignEvent(change.owner_id, CampaignResumed(campaign_id=change.campaign_id))
            )
        for change in quiet:
            row = rows.get(change.campaign_id)
            if row is None:
                continue
            total = int(row["total_recipients"])
            broadcaster.publish(
                CampaignEvent(
                    change.owner_id,
                    CampaignPaused(
                        campaign_id=change.campaign_id,
                        processed_count=processed_count(stats_from_row(row), total),
                        total_recipients=total,
                        paused_at=iso(row["paused_at"]),
                        reason=change.reason,
                    ),
                )
            )

    async def _announce(
        self, db: Database, broadcaster: Broadcaster, campaign_ids: list[str]
    ) -> None:
        for row in await campaigns.campaign_rows(db, campaign_ids):
            broadcaster.publish(CampaignEvent(row["owner_id"], stats_changed(row)))


async def run(
    db: Database,
    broadcaster: Broadcaster,
    settings: WebhookSettings,
    *,
    clock: WallClock | None = None,
    task_status: trio.TaskStatus[WebhookApplier] = trio.TASK_STATUS_IGNORED,
) -> None:
    applier = WebhookApplier(settings.max_queued)
    task_status.started(applier)
    await applier.serve(db, broadcaster, settings, clock)
