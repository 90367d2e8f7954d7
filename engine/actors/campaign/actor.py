"""One actor per running campaign: its lifecycle, commands and outcomes.

It owns the campaign's dispatcher (pace, batch cursor, marking; see
`dispatch.py`) and its reporter (events; see `reporting.py`). Three tasks:
dispatch; the stored outcomes the recorder announces; and commands (stop,
throttle changes, rechecks, shutdown).

When dispatch stops (finished, paused, cancelled, shutting down) marked sends
not yet written go back to `pending`, those being written finish and are
stored, and the actor ends. A paused campaign holds no task: resuming it
schedules it again and a new actor starts from the stored cursor.

An A/B test with a sample (`abTest`) dispatches in three steps, each stored so
that an actor taking the campaign over resumes at the same step: the sample
(the rest wait `pending`, far ahead, engine/store/recipients.py) until no sample
recipient is pending; then a wait of `decideAfterMinutes` for its webhooks;
then the winner (engine/core/ab_winner.py), given to the rest in the same
transaction, and a new dispatcher sends them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, Literal, TypeVar

import msgspec
import trio

from engine.actors.account_budget import AccountBudget
from engine.actors.broadcaster import Broadcaster
from engine.actors.campaign.dispatch import Dispatcher, NotRunningHere
from engine.actors.campaign.reporting import Reporter
from engine.actors.marker import Marker
from engine.actors.sender_pool import SenderPool
from engine.clock import WallClock
from engine.core.ab_winner import WinnerMetric, choose_winner
from engine.core.metrics import CampaignStats
from engine.messages import (
    CampaignCommand,
    Recheck,
    Recorded,
    Shutdown,
    StopRequested,
    ThrottleChanged,
)
from engine.settings import Settings
from engine.store import campaign_runs, variants
from engine.store.campaign_runs import AbTestPlan, CampaignPlan
from engine.store.database import Database
from engine.store.retrying import retrying

log = logging.getLogger(__name__)

T = TypeVar("T")

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
        budgets: AccountBudget,
        broadcaster: Broadcaster,
        lease_owner: str,
        recorded: trio.MemorySendChannel[Recorded],
        marker: Marker | None = None,
    ) -> None:
        self.plan = plan
        self.db = db
        self.settings = settings
        self.clock = clock
        self._new_dispatcher = partial(
            Dispatcher,
            db=db,
            settings=settings,
            clock=clock,
            pool=pool,
            budgets=budgets,
            lease_owner=lease_owner,
            recorded=recorded,
            broadcaster=broadcaster,
            marker=marker,
        )
        self.dispatcher = self._new_dispatcher(plan)
        self.reporter = Reporter(
            plan, db=db, clock=clock, broadcaster=broadcaster, settings=settings.engine
        )
        self.stop_reason: StopReason | None = None
        self.pause_reason: str | None = None
        self.pause_number = False  # the pause is the phone number's: all its campaigns
        self.dispatch_scope = trio.CancelScope()
        self.drain_scope = trio.CancelScope()
        self.recorded = 0
        # While an A/B test's sample is sent: cancelled once none of it is pending.
        self.sample_scope: trio.CancelScope | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def run(
        self,
        commands: trio.MemoryReceiveChannel[CampaignCommand],
        recorded: trio.MemoryReceiveChannel[Recorded],
    ) -> None:
        plan = self.plan
        if plan.account_status != "connected":
            await self._fail("WhatsApp account is not connected")
            return
        stats = await self._retrying(self.reporter.load)
        if stats.pending == 0 and stats.in_doubt == 0:
            log.warning("campaign %s: no pending recipients for campaign", plan.id)
            await self._complete()
            return
        if plan.started_at is None:
            self.reporter.started()
        log.info(
            "campaign %s: running at %.4g/min, %d of %d recipients processed",
            plan.id,
            self.dispatcher.throttle.messagesPerMinute,
            self.reporter.processed,
            plan.total_recipients,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_commands, commands)
            nursery.start_soon(self._serve_recorded, recorded)
            reason: StopReason = "stopped"
            with self.dispatch_scope:
                try:
                    await self._dispatch(stats)
                    reason = "finished"
                except NotRunningHere:
                    pass
            self.stop_reason = self.stop_reason or reason
            self.dispatcher.close()
            await self._drain()
            nursery.cancel_scope.cancel()
        await self._retrying(campaign_runs.save_cursor, self.db, plan.id, self.dispatcher.cursor)
        await self._conclude()

    async def _dispatch(self, stats: CampaignStats) -> None:
        test = self.plan.ab_test
        if test is not None and test.winner is None:
            decide_at = test.decide_at
            if decide_at is None:
                await self._send_sample(stats)
                due = self.clock.now() + timedelta(minutes=test.decide_after_minutes)
                decide_at = await self._retrying(variants.sample_sent, self.db, self.plan.id, due)
                self.reporter.sample_sent(test.sample_size, decide_at)
            await trio.sleep_until(self.clock.trio_time_at(decide_at))
            await self._choose_winner(test)
        await self.dispatcher.run()

    async def _send_sample(self, stats: CampaignStats) -> None:
        """Dispatch until no sample recipient is pending (the rest always are)."""
        self.sample_scope = trio.CancelScope()
        with self.sample_scope:
            if not self._sample_sent(stats):
                await self.dispatcher.run()
        self.sample_scope = None
        # Nothing of the sample is in flight; the rest is sent by a new pass from
        # the start, at the rate of the moment.
        self.dispatcher.close()
        self.dispatcher = self._new_dispatcher(
            msgspec.structs.replace(self.plan, batch_cursor=0, throttle=self.dispatcher.throttle)
        )

    def _sample_sent(self, stats: CampaignStats) -> bool:
        test = self.plan.ab_test
        assert test is not None
        return stats.pending <= self.plan.total_recipients - test.sample_size

    async def _choose_winner(self, test: AbTestPlan) -> None:
        metric: WinnerMetric = test.metric  # type: ignore[assignment]
        chosen = await self._retrying(
            variants.decide_winner,
            self.db,
            self.plan.id,
            partial(choose_winner, metric),
            now=self.clock.now(),
        )
        if chosen.now:  # announced once, by the actor that decided
            self.reporter.variant_chosen(metric, chosen.winner, chosen.values, chosen.decided_at)

    async def _drain(self) -> None:
        """Let the sends being written finish and be stored. Unbounded for a pause
        (its sends are at most a few requests, each bounded by the read timeout);
        a shutdown bounds it by the grace, even one that comes during a pause's drain.
        Sends still unstored after that are stored by the recorder all the same."""
        if self.stop_reason == "shutdown":
            self._shorten_drain()
        with self.drain_scope:
            await self.dispatcher.wait_in_flight()
        if self.dispatcher.in_flight:
            log.warning(
                "campaign %s: %d sends unrecorded at shutdown; the recorder still stores them",
                self.plan.id,
                self.dispatcher.in_flight,
            )

    def _shorten_drain(self) -> None:
        grace = self.settings.server.shutdown_grace_seconds
        self.drain_scope.deadline = min(self.drain_scope.deadline, trio.current_time() + grace)

    async def _conclude(self) -> None:
        plan = self.plan
        if self.stop_reason == "finished":
            await self._complete()
        elif self.stop_reason == "account":
            reason = self.pause_reason or "WhatsApp refused the account"
            if self.pause_number:
                paused = await self._retrying(
                    campaign_runs.pause_number_campaigns,
                    self.db,
                    plan.account_phone_number_id,
                    reason=reason,
                    now=self.clock.now(),
                )
                log.warning(
                    "number %s: %d campaigns paused: %s",
                    plan.account_phone_number_id,
                    len(paused),
                    reason,
                )
            else:
                await self._retrying(
                    campaign_runs.pause_by_engine,
                    self.db,
                    plan.id,
                    reason=reason,
                    now=self.clock.now(),
                )
            # Paused by this statement, or meanwhile by another campaign of the same
            # number (or the user): announced once, with the reason stored.
            status, at, stored_reason = await self._retrying(
                campaign_runs.campaign_status, self.db, plan.id
            )
            if status == "paused":
                log.warning("campaign %s: paused: %s", plan.id, stored_reason)
                await self._retrying(self.reporter.paused, stored_reason, at)
        elif self.stop_reason == "stopped":
            status, at, user_reason = await self._retrying(
                campaign_runs.campaign_status, self.db, plan.id
            )
            if status == "paused":
                log.warning("campaign %s: paused", plan.id)
                await self._retrying(self.reporter.paused, user_reason, at)
            elif status == "cancelled":
                self.reporter.cancelled(at)

    async def _complete(self) -> None:
        if await self._retrying(
            campaign_runs.finish, self.db, self.plan.id, "completed", now=self.clock.now()
        ):
            await self._retrying(self.reporter.completed)

    async def _fail(self, error: str) -> None:
        if await self._retrying(
            campaign_runs.finish, self.db, self.plan.id, "failed", now=self.clock.now(), error=error
        ):
            self.reporter.failed(error)

    # --- outcomes and commands ----------------------------------------------------------

    async def _serve_recorded(self, recorded: trio.MemoryReceiveChannel[Recorded]) -> None:
        async for message in recorded:
            self.recorded += len(message.outcomes)
            self.dispatcher.on_recorded(message.outcomes)
            self.reporter.recorded(message.outcomes, message.stats)
            if self.sample_scope is not None and self._sample_sent(message.stats):
                self.sample_scope.cancel()
            paused = next((o for o in message.outcomes if o.pause_reason), None)
            if paused is not None and self.stop_reason is None:
                self.pause_reason = paused.pause_reason
                self.pause_number = paused.pause_number
                self._stop("account")

    async def _serve_commands(self, commands: trio.MemoryReceiveChannel[CampaignCommand]) -> None:
        async for command in commands:
            match command:
                case StopRequested():
                    status, _, _ = await self._retrying(
                        campaign_runs.campaign_status, self.db, self.plan.id
                    )
                    if status != "running":
                        self._stop("stopped")
                case Shutdown():
                    self._stop("shutdown")
                    self._shorten_drain()
                case ThrottleChanged():
                    throttle = await self._retrying(
                        campaign_runs.load_throttle, self.db, self.plan.id
                    )
                    self.dispatcher.set_throttle(throttle)
                    log.info(
                        "campaign %s: rate now %.4g/min", self.plan.id, throttle.messagesPerMinute
                    )
                case Recheck():
                    self.dispatcher.wake()
                    await self._retrying(self.reporter.resync)

    def _stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        # Closed first: a marked send not yet written goes back, at once.
        self.dispatcher.close()
        self.dispatch_scope.cancel()

    async def _retrying(
        self, operation: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """One store operation, retried while the database is unreachable: an outage
        holds this campaign up, it never ends the actor."""
        return await retrying(f"running campaign {self.plan.id}", operation, *args, **kwargs)

    # --- monitoring ---------------------------------------------------------------------

    def statistics(self) -> CampaignActorStatistics:
        return CampaignActorStatistics(
            campaign_id=self.plan.id,
            dispatched=self.dispatcher.dispatched,
            recorded=self.recorded,
            in_flight=self.dispatcher.in_flight,
            rate_per_minute=self.dispatcher.bucket.rate_per_second * 60,
            cursor=self.dispatcher.cursor,
        )


async def run(
    plan: CampaignPlan,
    *,
    db: Database,
    settings: Settings,
    clock: WallClock,
    pool: SenderPool,
    budgets: AccountBudget,
    broadcaster: Broadcaster,
    lease_owner: str,
    marker: Marker | None = None,
    task_status: trio.TaskStatus[CampaignHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one campaign (already `running`, lease held) until it ends or stops."""
    commands_send, commands = trio.open_memory_channel[CampaignCommand](64)
    # One message per stored batch holding at least one of its sends, and it
    # has at most `pool.slots` sends out: the recorder never finds this full.
    recorded_send, recorded = trio.open_memory_channel[Recorded](pool.slots)
    campaign = _CampaignRun(
        plan,
        db=db,
        settings=settings,
        clock=clock,
        pool=pool,
        budgets=budgets,
        broadcaster=broadcaster,
        lease_owner=lease_owner,
        recorded=recorded_send,
        marker=marker,
    )
    async with commands_send, commands, recorded_send, recorded:
        task_status.started(CampaignHandle(plan.id, commands_send, campaign))
        await campaign.run(commands, recorded)
