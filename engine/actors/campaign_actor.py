"""One actor per running campaign.

It owns the campaign's token bucket, batch cursor and stop state. Three tasks:

- dispatch: reads batches of pending recipients after the cursor, paces them
  with the token bucket, marks small groups `sending` just before handing them
  to the sender pool (only rows that statement returns are sent);
- record: stores outcomes in batches (group commit: one statement for all that
  arrived while the previous one ran, lingering briefly only while more are
  on their way), frees their slots, and emits progress and stats;
- commands: stop (pause/cancel), throttle changes, rechecks, shutdown.

When dispatch stops (finished, paused, cancelled, shutting down) the actor lets
the requests already handed over finish and be recorded, then ends. A paused
campaign holds no task: resuming it schedules it again and a new actor starts
from the stored cursor.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from datetime import timedelta
from typing import Any, Literal

import msgspec
import trio

from engine.actors.broadcaster import Broadcaster
from engine.actors.sender_pool import SenderPool
from engine.clock import WallClock
from engine.core.campaign_view import (
    campaign_object,
    iso,
    metrics_payload,
    processed_count,
    stats_payload,
)
from engine.core.metrics import CampaignStats, progress_percent
from engine.core.rendering import render_payload
from engine.core.token_bucket import TokenBucket
from engine.events import Event
from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.messages import (
    CampaignCommand,
    CampaignEvent,
    Outcome,
    Recheck,
    SendJob,
    Shutdown,
    StopRequested,
    ThrottleChanged,
)
from engine.settings import Settings
from engine.store import campaign_runs, campaigns, leases, recipients
from engine.store.campaign_runs import CampaignPlan, Throttle
from engine.store.database import Database
from engine.store.recipients import PendingRecipient

log = logging.getLogger(__name__)

_EVENT_TYPES: dict[str, type[Event]] = {t.NAME: t for t in Event.__args__}

# A fast campaign sends in groups of this much of its rate (one mark statement
# each); a slow one sends one recipient at a time, evenly spaced.
_GROUP_SECONDS = 0.01
_MAX_RECORD_BATCH = 1000

StopReason = Literal["finished", "stopped", "account", "shutdown"]


class CampaignActorStatistics(msgspec.Struct, frozen=True):
    campaign_id: str
    dispatched: int
    recorded: int
    in_flight: int
    rate_per_minute: float
    cursor: int


class CampaignHandle:
    """What the supervisor keeps of a running actor."""

    def __init__(
        self, campaign_id: str, inbox: trio.MemorySendChannel[CampaignCommand], run: _CampaignRun
    ) -> None:
        self.campaign_id = campaign_id
        self._inbox = inbox
        self._run = run

    def tell(self, command: CampaignCommand) -> None:
        try:
            self._inbox.send_nowait(command)
        except trio.WouldBlock:
            # Commands are idempotent re-reads of the database; a full inbox
            # already holds one that will make the actor look.
            log.warning("campaign %s: command inbox full, %r dropped", self.campaign_id, command)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def statistics(self) -> CampaignActorStatistics:
        return self._run.statistics()


class _CampaignRun:
    def __init__(
        self,
        plan: CampaignPlan,
        *,
        db: Database,
        settings: Settings,
        clock: WallClock,
        pool: SenderPool,
        broadcaster: Broadcaster,
        lease_owner: str,
    ) -> None:
        self.plan = plan
        self.db = db
        self.settings = settings
        self.clock = clock
        self.pool = pool
        self.broadcaster = broadcaster
        self.lease_owner = lease_owner
        self.throttle = plan.throttle
        self.bucket = TokenBucket.paced(
            self._rate_per_second(plan.throttle), now=trio.current_time()
        )
        self.cursor = plan.batch_cursor
        self.endpoint = AccountEndpoint(
            account_id=plan.account_id,
            api_url=(plan.account_api_url or settings.whatsapp.api_url).rstrip("/"),
            phone_number_id=plan.account_phone_number_id,
            access_token=plan.account_access_token,
        )
        outcomes_send, self.outcomes = trio.open_memory_channel[Outcome](pool.concurrency)
        self.outcomes_send = outcomes_send
        self.stop_reason: StopReason | None = None
        self.pause_reason: str | None = None
        self.dispatch_scope = trio.CancelScope()
        self.wait_scope: trio.CancelScope | None = None
        self.linger_scope: trio.CancelScope | None = None
        self.in_flight = 0  # slots held: marked `sending` and not yet recorded
        self.submitted = 0  # of those, handed to the sender pool
        self.recorded_changed = trio.Event()
        self.dispatched = 0
        self.recorded = 0
        self.processed = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, commands: trio.MemoryReceiveChannel[CampaignCommand]) -> None:
        plan = self.plan
        if plan.account_status != "connected":
            await self._fail("WhatsApp account is not connected")
            return
        stats = await recipients.campaign_stats(self.db, plan.id)
        self.processed = processed_count(stats, plan.total_recipients)
        if stats.pending == 0 and stats.in_doubt == 0:
            log.warning("campaign %s: no pending recipients for campaign", plan.id)
            await self._complete()
            return
        if plan.started_at is None:
            self._publish(
                "campaign:started",
                {
                    "campaignId": plan.id,
                    "name": plan.name,
                    "totalRecipients": plan.total_recipients,
                    "startedAt": iso(self.clock.now()),
                },
            )
        log.info(
            "campaign %s: running at %.4g/min, %d of %d recipients processed",
            plan.id,
            self.throttle.messagesPerMinute,
            self.processed,
            plan.total_recipients,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_commands, commands)
            nursery.start_soon(self._record_outcomes)
            with self.dispatch_scope:
                reason = await self._dispatch()
            self.stop_reason = self.stop_reason or reason
            await self._drain()
            nursery.cancel_scope.cancel()
        await campaign_runs.save_cursor(self.db, plan.id, self.cursor)
        await self._conclude()

    async def _drain(self) -> None:
        """Let the requests already handed over finish and be recorded."""
        grace = self.settings.server.shutdown_grace_seconds
        with trio.move_on_after(grace if self.stop_reason == "shutdown" else math.inf):
            while self.in_flight:
                await self.recorded_changed.wait()
        if self.in_flight:
            log.warning(
                "campaign %s: %d sends unrecorded at shutdown; they will be in doubt",
                self.plan.id,
                self.in_flight,
            )

    async def _conclude(self) -> None:
        plan = self.plan
        if self.stop_reason == "finished":
            await self._complete()
        elif self.stop_reason == "account":
            account_reason = self.pause_reason or "WhatsApp refused the account"
            if await campaign_runs.pause_by_engine(
                self.db, plan.id, reason=account_reason, now=self.clock.now()
            ):
                log.warning("campaign %s: paused: %s", plan.id, account_reason)
                await self._publish_paused(account_reason)
        elif self.stop_reason == "stopped":
            status, at, reason = await campaign_runs.campaign_status(self.db, plan.id)
            if status == "paused":
                log.warning("campaign %s: paused", plan.id)
                await self._publish_paused(reason, at)
            elif status == "cancelled":
                log.info("campaign %s: cancelled", plan.id)
                self._publish("campaign:cancelled", {"campaignId": plan.id, "cancelledAt": iso(at)})

    async def _complete(self) -> None:
        plan = self.plan
        now = self.clock.now()
        if not await campaign_runs.finish(self.db, plan.id, "completed", now=now):
            return
        stats = await recipients.campaign_stats(self.db, plan.id)
        processed = processed_count(stats, plan.total_recipients)
        if (
            processed != self.processed
            or plan.total_recipients % self.settings.engine.progress_every
        ):
            self.processed = processed
            self._publish_progress(processed, stats)
        row = await campaigns.campaign_row(self.db, plan.id)
        assert row is not None
        log.info(
            "campaign %s: completed: %d sent, %d failed",
            plan.id,
            stats.sent,
            stats.failed,
        )
        self._publish(
            "campaign:completed",
            {
                "campaignId": plan.id,
                "campaign": campaign_object(row),
                "completedAt": iso(now),
            },
        )

    async def _fail(self, error: str) -> None:
        now = self.clock.now()
        if await campaign_runs.finish(self.db, self.plan.id, "failed", now=now, error=error):
            log.error("campaign %s: failed: %s", self.plan.id, error)
            self._publish(
                "campaign:failed",
                {
                    "campaignId": self.plan.id,
                    "error": error,
                    "failedAt": iso(now),
                },
            )

    # --- dispatch -----------------------------------------------------------------------

    async def _dispatch(self) -> StopReason:
        plan = self.plan
        while True:
            batch = await recipients.claim_batch(
                self.db,
                plan.id,
                after_id=self.cursor,
                limit=self.throttle.batchSize,
                now=self.clock.now(),
            )
            if not batch:
                if await self._nothing_left_to_send():
                    return "finished"
                continue
            if not await self._send_batch(batch):
                return "stopped"
            self.cursor = max(self.cursor, batch[-1].id)
            await campaign_runs.save_cursor(self.db, plan.id, self.cursor)
            if self.throttle.delayBetweenBatches > 0:
                await self._wait(trio.current_time() + self.throttle.delayBetweenBatches / 1000)

    async def _nothing_left_to_send(self) -> bool:
        """Called when the cursor reached the end. Starts a new pass over rows left
        behind (requeued, or put back after a pause) and waits for what is pending
        elsewhere: in-flight outcomes, requeue times, in-doubt resolution."""
        plan = self.plan
        while self.in_flight and self.stop_reason is None:
            await self.recorded_changed.wait()
        if self.stop_reason is not None:
            return False  # _dispatch's scope is cancelled; it will not look at this
        if self.cursor:
            self.cursor = 0
            return False
        requeued_at = await recipients.next_requeued_at(self.db, plan.id)
        if requeued_at is not None:
            await self._wait(self.clock.trio_time_at(requeued_at))
            return False
        stats = await recipients.campaign_stats(self.db, plan.id)
        if stats.pending:
            return False
        if not stats.in_doubt:
            return True
        return await self._wait_for_in_doubt()

    async def _wait_for_in_doubt(self) -> bool:
        plan = self.plan
        timeout = timedelta(seconds=self.settings.delivery.in_doubt_timeout)
        oldest = await recipients.next_in_doubt_since(self.db, plan.id)
        if oldest is not None:
            log.warning("campaign %s: waiting for in-doubt sends to be resolved", plan.id)
            # A webhook resolving them sends a Recheck, which ends this wait early.
            await self._wait(self.clock.trio_time_at(oldest + timeout))
        expired = await recipients.expire_in_doubt(
            self.db,
            plan.id,
            cutoff=self.clock.now() - timeout,
            resend=self.settings.delivery.on_in_doubt == "resend",
            now=self.clock.now(),
        )
        if expired:
            log.warning(
                "campaign %s: %d in-doubt sends timed out (%s)",
                plan.id,
                expired,
                self.settings.delivery.on_in_doubt,
            )
            await self._after_external_change()
        return False

    async def _send_batch(self, batch: list[PendingRecipient]) -> bool:
        """Pace and hand over one batch; False when the campaign stopped meanwhile.

        Tokens come first: the actor waits for a small group of them, then takes
        slots, marks the group `sending` and hands it over at once. A slot is held
        only while its recipient is sent and recorded, never while it waits for
        its turn, and nothing marked is ever left waiting if the campaign stops.
        """
        waiting = deque(batch)
        while waiting:
            group_size = min(len(waiting), self._group_size())
            await self._wait_for_tokens(group_size)
            slots = await self.pool.acquire_slots(group_size)
            granted = self.bucket.take(trio.current_time(), slots)
            group = [waiting.popleft() for _ in range(granted)]
            with trio.CancelScope(shield=True):
                marked = await recipients.mark_sending(
                    self.db,
                    self.plan.id,
                    [r.id for r in group],
                    lease_owner=self.lease_owner,
                    now=self.clock.now(),
                )
                self.pool.release_slots(slots - len(marked))
                for job in self._jobs(group, set(marked)):
                    self.pool.submit(job)
                self.in_flight += len(marked)
                self.submitted += len(marked)
                self.dispatched += len(marked)
            if len(marked) < len(group) and not await self._still_running():
                return False  # rows not marked were resolved elsewhere (webhook) if still running
        return True

    def _jobs(self, group: list[PendingRecipient], marked: set[int]) -> list[SendJob]:
        plan = self.plan
        jobs = []
        for recipient in group:
            if recipient.id not in marked:
                continue
            payload = render_payload(
                plan.message_type,
                plan.message_content,
                recipient.variables,
                plan.template_variables,
                media_url=plan.media_url,
            )
            message = OutgoingMessage(
                recipient.id,
                recipient.phone,
                plan.message_type,  # type: ignore[arg-type]
                payload,
            )
            jobs.append(
                SendJob(
                    plan.id,
                    self.endpoint,
                    plan.account_messages_per_second,
                    message,
                    self.outcomes_send,
                )
            )
        return jobs

    def _group_size(self) -> int:
        ahead = math.ceil(self.bucket.rate_per_second * _GROUP_SECONDS)
        return max(1, min(ahead, self.pool.concurrency, math.floor(self.bucket.capacity)))

    async def _wait_for_tokens(self, count: int) -> None:
        """Wait until `count` tokens are there, without taking them."""
        while True:
            now = trio.current_time()
            delay = self.bucket.seconds_until_available(now, count)
            if delay <= 0:
                return
            # A throttle change cancels this wait so the new rate applies at once.
            await self._wait(now + delay)

    async def _wait(self, deadline: float) -> None:
        """Sleep until `deadline`, or until a command wants the dispatcher to look again."""
        with trio.CancelScope(deadline=deadline) as scope:
            self.wait_scope = scope
            await trio.sleep_forever()
        self.wait_scope = None

    async def _still_running(self) -> bool:
        return await leases.runs_here(self.db, self.plan.id, lease_owner=self.lease_owner)

    # --- outcomes -----------------------------------------------------------------------

    async def _record_outcomes(self) -> None:
        unsubscribe = self.pool.when_starved(self._stop_lingering)
        try:
            async for first in self.outcomes:
                batch = await self._gather(first)
                with trio.CancelScope(shield=True):
                    await recipients.record_outcomes(self.db, batch, now=self.clock.now())
                self.submitted -= len(batch)
                self.in_flight -= len(batch)
                self.recorded += len(batch)
                self.pool.release_slots(len(batch))
                self._signal_recorded()
                await self._report(batch)
                reason = next((o.pause_reason for o in batch if o.pause_reason), None)
                if reason and self.stop_reason is None:
                    self.pause_reason = reason
                    self._stop("account")
        finally:
            unsubscribe()

    async def _gather(self, first: Outcome) -> list[Outcome]:
        """Group commit: one statement stores every outcome that arrives within
        the flush interval. Lingering holds their slots, so it ends early when
        someone waits for a slot, or when the campaign is stopping."""
        batch = [first]
        linger = self.settings.engine.record_flush_interval_ms / 1000
        with trio.move_on_after(linger) as scope:
            self.linger_scope = scope
            while len(batch) < _MAX_RECORD_BATCH:
                if self.stop_reason is not None or (
                    len(batch) >= self.submitted and self.pool.starved
                ):
                    scope.cancel()
                batch.append(await self.outcomes.receive())
        self.linger_scope = None
        while len(batch) < _MAX_RECORD_BATCH:  # whatever else is already here
            try:
                batch.append(self.outcomes.receive_nowait())
            except trio.WouldBlock:
                break
        return batch

    def _stop_lingering(self) -> None:
        if self.linger_scope is not None:
            self.linger_scope.cancel()

    async def _report(self, batch: list[Outcome]) -> None:
        """Emit progress every `progress_every` and stats every `stats_every` processed
        recipients, at the exact counts each threshold was crossed at."""
        every_progress = self.settings.engine.progress_every
        every_stats = self.settings.engine.stats_every
        before = self.processed
        finals = [o for o in batch if o.status != "pending"]
        if (before + len(finals)) // every_stats == before // every_stats and (
            before + len(finals)
        ) // every_progress == before // every_progress:
            self.processed = before + len(finals)
            return
        latest = await recipients.campaign_stats(self.db, self.plan.id)
        # Walk back from the stored counts to each threshold inside this batch.
        sent_after = sum(1 for o in finals if o.status == "sent")
        failed_after = len(finals) - sent_after
        processed = before
        for outcome in finals:
            processed += 1
            if outcome.status == "sent":
                sent_after -= 1
            else:
                failed_after -= 1
            if processed % every_progress and processed % every_stats:
                continue
            at_threshold = msgspec.structs.replace(
                latest,
                sent=latest.sent - sent_after,
                failed=latest.failed - failed_after,
                pending=latest.pending + sent_after + failed_after,
            )
            if processed % every_progress == 0:
                self._publish_progress(processed, at_threshold)
            if processed % every_stats == 0:
                self._publish(
                    "campaign:stats",
                    {
                        "campaignId": self.plan.id,
                        "stats": stats_payload(at_threshold),
                        "metrics": metrics_payload(at_threshold, self.plan.total_recipients),
                    },
                )
        self.processed = processed

    async def _after_external_change(self) -> None:
        """Counts moved outside the actor's own outcomes (in-doubt resolved)."""
        stats = await recipients.campaign_stats(self.db, self.plan.id)
        self.processed = processed_count(stats, self.plan.total_recipients)

    # --- commands -----------------------------------------------------------------------

    async def _serve_commands(self, commands: trio.MemoryReceiveChannel[CampaignCommand]) -> None:
        async for command in commands:
            match command:
                case StopRequested():
                    status, _, _ = await campaign_runs.campaign_status(self.db, self.plan.id)
                    if status != "running":
                        self._stop("stopped")
                case Shutdown():
                    self._stop("shutdown")
                case ThrottleChanged():
                    self.throttle = await campaign_runs.load_throttle(self.db, self.plan.id)
                    self.bucket.set_rate(self._rate_per_second(self.throttle), trio.current_time())
                    log.info(
                        "campaign %s: rate now %.4g/min",
                        self.plan.id,
                        self.throttle.messagesPerMinute,
                    )
                    self._wake()
                case Recheck():
                    self._wake()

    def _stop(self, reason: StopReason) -> None:
        self.stop_reason = reason
        self.dispatch_scope.cancel()
        self._stop_lingering()
        self._signal_recorded()  # a dispatcher waiting on in-flight outcomes looks again

    def _signal_recorded(self) -> None:
        self.recorded_changed.set()
        self.recorded_changed = trio.Event()

    def _wake(self) -> None:
        if self.wait_scope is not None:
            self.wait_scope.cancel()

    # --- events -------------------------------------------------------------------------

    def _publish(self, name: str, payload: dict[str, Any]) -> None:
        event = msgspec.convert(payload, _EVENT_TYPES[name])
        self.broadcaster.publish(CampaignEvent(self.plan.owner_id, event))

    def _publish_progress(self, processed: int, stats: CampaignStats) -> None:
        total = self.plan.total_recipients
        self._publish(
            "campaign:progress",
            {
                "campaignId": self.plan.id,
                "progress": progress_percent(processed, total),
                "processedCount": processed,
                "totalRecipients": total,
                "sentCount": stats.sent,
                "failedCount": stats.failed,
            },
        )
        if processed % 1000 == 0 or processed == total:
            log.info("campaign %s: %d/%d processed", self.plan.id, processed, total)

    async def _publish_paused(self, reason: str | None, at: Any = None) -> None:
        stats = await recipients.campaign_stats(self.db, self.plan.id)
        self._publish(
            "campaign:paused",
            {
                "campaignId": self.plan.id,
                "processedCount": processed_count(stats, self.plan.total_recipients),
                "totalRecipients": self.plan.total_recipients,
                "pausedAt": iso(at or self.clock.now()),
                "reason": reason,
            },
        )

    # --- monitoring ---------------------------------------------------------------------

    def statistics(self) -> CampaignActorStatistics:
        return CampaignActorStatistics(
            campaign_id=self.plan.id,
            dispatched=self.dispatched,
            recorded=self.recorded,
            in_flight=self.in_flight,
            rate_per_minute=self.bucket.rate_per_second * 60,
            cursor=self.cursor,
        )

    @staticmethod
    def _rate_per_second(throttle: Throttle) -> float:
        return throttle.messagesPerMinute / 60


async def run(
    plan: CampaignPlan,
    *,
    db: Database,
    settings: Settings,
    clock: WallClock,
    pool: SenderPool,
    broadcaster: Broadcaster,
    lease_owner: str,
    task_status: trio.TaskStatus[CampaignHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one campaign (already `running`, lease held) until it ends or stops."""
    commands_send, commands = trio.open_memory_channel[CampaignCommand](64)
    campaign = _CampaignRun(
        plan,
        db=db,
        settings=settings,
        clock=clock,
        pool=pool,
        broadcaster=broadcaster,
        lease_owner=lease_owner,
    )
    async with commands_send, commands, campaign.outcomes_send, campaign.outcomes:
        task_status.started(CampaignHandle(plan.id, commands_send, campaign))
        await campaign.run(commands)
