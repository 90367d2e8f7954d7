"""The campaign actor's dispatcher: from pending rows to sends written at their turn.

It reads batches of pending recipients after its cursor and hands them to the
sender pool in small groups. For each group it first waits, with the rows
still `pending`, until the campaign's own pace and the number's budget have a
turn within a few ms (see `_SPAN` below), takes sender slots, reserves those
turns, and only then marks the group `sending` (one statement; up to three
overlap) and hands it over with each send's turn; the pool holds each job
until its turn. So every wait happens while rows are pending, the rows marked
ahead of their request are bounded by the pool's slots (`sender.prefetch`),
and the sends keep the exact spacing of both paces
(docs/delivery-guarantees.md).

Outcomes come back through the recorder: a row to retry later stays in a small
in-memory schedule so it goes again at its time without waiting for the
cursor's next pass (the database holds its `not_before` too, for a restart).

A claimed batch is admitted before it is paced: rows outside their send window
(engine/core/send_window.py) and rows beyond the portfolio's messaging limit
(engine/store/portfolio_reach.py) are left `pending` with a `not_before` and a
reason, one statement each per batch, and come back through the same claim,
pace, budget and mark path when that moment comes; a pass that left some
waiting announces it (`campaign:deferred`) before the dispatcher waits.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import trio

from engine.actors.account_budget import AccountBudget
from engine.actors.broadcaster import Broadcaster
from engine.actors.marker import Marker
from engine.actors.sender_pool import SenderPool
from engine.clock import WallClock
from engine.core.campaign_view import iso
from engine.core.rendering import render_payload, with_tracked_links
from engine.core.send_window import SendWindow, next_opening, zone
from engine.core.token_bucket import TokenBucket
from engine.events import CampaignDeferred
from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.messages import CampaignEvent, DispatchGate, Outcome, Recorded, SendJob
from engine.settings import Settings
from engine.store import campaign_runs, leases, portfolio_reach, recipients
from engine.store.campaign_runs import CampaignPlan, Throttle
from engine.store.database import Database
from engine.store.errors import DatabaseUnavailable
from engine.store.recipients import PendingRecipient
from engine.store.retrying import retrying

log = logging.getLogger(__name__)

T = TypeVar("T")

# A group is the turns of `_SPAN` seconds (one statement marks them at high
# rates); it is marked `lead` seconds before its first turn, 1.5 times what a
# slow mark took lately (a mark is a durable commit), so a slow database costs
# no turns. Lead plus span stays under 50 ms: "no send starts more than 50 ms after
# a pause" holds for sends marked ahead too.
_SPAN = 0.01
_MIN_LEAD = 0.002
_MAX_LEAD = 0.04
_MARKS_IN_FLIGHT = 3
# A slow campaign (under one turn per span: its groups are single rows) wakes for
# its next turn on this grid, up to one step early: campaigns due within the same
# few milliseconds wake in one scheduler pass and share a mark statement
# (engine/actors/marker.py), where 1,000 such campaigns woken one by one each woke
# the loop and made a commit of their own. Half the span, so the turn it woke for
# is still inside its group's horizon: nothing is marked further ahead of its send
# than lead plus span.
_WAKE_GRID = 0.005

# A pass that found nothing to claim although rows are pending (they were locked
# by a concurrent statement, or became due meanwhile) looks again after this.
_IDLE_RECHECK_SECONDS = 1.0


def _on_the_grid(deadline: float) -> float:
    return math.floor(deadline / _WAKE_GRID) * _WAKE_GRID


class Dispatcher:
    def __init__(
        self,
        plan: CampaignPlan,
        *,
        db: Database,
        settings: Settings,
        clock: WallClock,
        pool: SenderPool,
        budgets: AccountBudget,
        lease_owner: str,
        recorded: trio.MemorySendChannel[Recorded],
        broadcaster: Broadcaster | None = None,
        marker: Marker | None = None,
    ) -> None:
        self.plan = plan
        # Shared by the daemon's campaigns: one statement marks many groups.
        assert marker is None or marker.lease_owner == lease_owner
        self._marker = marker
        self._broadcaster = broadcaster
        self._db = db
        self._settings = settings
        self._clock = clock
        self._pool = pool
        self._budgets = budgets
        self._lease_owner = lease_owner
        self._recorded = recorded
        self.throttle = plan.throttle
        # Capacity 1: the campaign never sends more than rate + 1 in any second.
        self.bucket = TokenBucket(_per_second(plan.throttle), now=trio.current_time())
        self.cursor = plan.batch_cursor
        self.gate = DispatchGate()
        self.endpoint = AccountEndpoint(
            account_id=plan.account_id,
            api_url=(plan.account_api_url or settings.whatsapp.api_url).rstrip("/"),
            phone_number_id=plan.account_phone_number_id,
            access_token=plan.account_access_token,
        )
        # The account's budget is the number's: two account rows of one number share it.
        self._budget_key = plan.account_phone_number_id
        # Only the budget's fallback: it reads the number's current rate itself.
        self._account_rate = float(plan.account_messages_per_second)
        self._in_flight: dict[int, PendingRecipient] = {}  # marked, outcome not yet stored
        self._retries: list[tuple[float, int, PendingRecipient]] = []  # (trio time, id, row)
        self._in_flight_changed = trio.Event()
        self._wait_scope: trio.CancelScope | None = None
        self._loop_scope = trio.CancelScope()
        self._marks: trio.Nursery | None = None
        self._mark_slots = trio.Semaphore(_MARKS_IN_FLIGHT)
        self._marking = 0  # rows in a mark statement on the wire
        self._lead = _MIN_LEAD
        self._mark_seconds = 0.0  # a recent slow mark's duration, decaying
        self._not_running_here = False
        self.dispatched = 0
        self._window = plan.send_window
        self._window_zone = zone(plan.send_window.timezone) if plan.send_window else None
        # Deferred since the last announcement: reason -> (count, earliest moment).
        self._deferred: dict[str, tuple[int, datetime]] = {}
        self._reach_limited = False  # as the last reservation found the portfolio
        self._wakes = 0  # how often it was told to look again
        self._expiry_cursor: portfolio_reach.Expiry | None = None  # last one staggered by

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch until every recipient is final; returns normally only then.
        The actor cancels it to stop. Raises NotRunningHere when a mark found the
        campaign paused, cancelled or no longer this daemon's."""
        async with trio.open_nursery() as marks:
            self._marks = marks
            with self._loop_scope:
                await self._loop()
            marks.cancel_scope.cancel()  # marks under way are shielded and finish
        if self._not_running_here:
            raise NotRunningHere

    async def _loop(self) -> None:
        ahead: _Claim | None = None
        while True:
            batch = await (ahead.result() if ahead else self._claim(self.cursor))
            ahead = None
            if batch:
                if len(batch) == self.throttle.batchSize:
                    # Read the next batch while this one is sent: the loop must not
                    # fall behind its turns (a late turn is lost, never bunched).
                    ahead = _Claim(self._claim, batch[-1].id)
                    self._background().start_soon(ahead.run)
                await self._send(deque(batch))
                self.cursor = max(self.cursor, batch[-1].id)
                self._background().start_soon(self._save_cursor, self.cursor)
                if self.throttle.delayBetweenBatches > 0:
                    await self._wait(trio.current_time() + self.throttle.delayBetweenBatches / 1000)
            elif self._due_retries():
                await self._send(deque())
            elif await self._end_of_pass():
                return

    async def _claim(self, after_id: int) -> list[PendingRecipient]:
        """The next sendable rows after `after_id`; reads on past batches that were
        deferred whole, so an empty answer means none is left to claim."""
        while True:
            batch = await self._retrying(
                recipients.claim_batch,
                self._db,
                self.plan.id,
                after_id=after_id,
                limit=self.throttle.batchSize,
                now=self._clock.now(),
            )
            if not batch:
                return []
            admitted = await self._admit(batch)
            if admitted:
                return admitted
            after_id = batch[-1].id

    async def _admit(self, batch: list[PendingRecipient]) -> list[PendingRecipient]:
        """The rows of `batch` that may go now. The others stay `pending` until
        their window opens, or until the portfolio's window has room."""
        now = self._clock.now()
        if self._window is not None:
            openings = {r.id: at for r in batch if (at := self._opening(self._window, r, now))}
            if openings:
                await self._retrying(
                    recipients.defer,
                    self._db,
                    list(openings),
                    list(openings.values()),
                    reason="send_window",
                )
                self._note_deferred("send_window", len(openings), min(openings.values()))
                batch = [r for r in batch if r.id not in openings]
        if not batch:
            return batch
        # Reach is reserved when a batch is claimed, not per send: a batch
        # stopped by a pause counts users not yet reached (they do not count
        # again when sent within the window).
        deferred = await self._retrying(
            portfolio_reach.reserve,
            self._db,
            self.plan.account_id,
            [r.id for r in batch],
            [r.phone for r in batch],
            now=now,
        )
        self._reach_limited = deferred.limited
        if deferred.ids and deferred.until is not None:
            waiting = [r.id for r in batch if r.id in deferred.ids]
            until = await self._stagger(waiting, deferred.until)
            self._note_deferred("messaging_limit", len(waiting), until)
            batch = [r for r in batch if r.id not in deferred.ids]
        return batch

    async def _stagger(self, waiting: list[int], until: datetime) -> datetime:
        """Room comes back one user at a time, as each reach expires: the n-th
        recipient left waiting in this pass waits for the n-th expiry (those past
        the last one for the last), so each moment wakes only the rows it has room
        for, not all of them. Returns the earliest."""
        moments = await self._retrying(
            portfolio_reach.expiries,
            self._db,
            self.plan.account_id,
            after=self._expiry_cursor,
            count=len(waiting),
        )
        if not moments:
            return until  # none left to stagger by: all wait for the last expiry
        self._expiry_cursor = moments[-1]
        times = [m.at for m in moments] + [moments[-1].at] * (len(waiting) - len(moments))
        await self._retrying(recipients.defer, self._db, waiting, times, reason="messaging_limit")
        return times[0]

    def _opening(
        self, window: SendWindow, recipient: PendingRecipient, now: datetime
    ) -> datetime | None:
        """When the recipient's window opens (None: open now). Its contact's
        `timezone` attribute wins over the campaign's; one that names no zone
        falls back to the campaign's."""
        tz = zone(recipient.variables.get("timezone")) or self._window_zone or zone("UTC")
        assert tz is not None
        return next_opening(window, tz, now)

    def _note_deferred(self, reason: str, count: int, until: datetime) -> None:
        seen, earliest = self._deferred.get(reason, (0, until))
        self._deferred[reason] = (seen + count, min(earliest, until))

    def _announce_deferred(self) -> None:
        """The pass is over and rows wait: say why and until when, once a reason."""
        for reason, (count, until) in self._deferred.items():
            log.info(
                "campaign %s: %d recipients wait (%s) until %s", self.plan.id, count, reason, until
            )
            if self._broadcaster is not None:
                event = CampaignDeferred(
                    campaign_id=self.plan.id, reason=reason, deferred_until=iso(until), count=count
                )
                self._broadcaster.publish(CampaignEvent(self.plan.owner_id, event))
        self._deferred.clear()
        self._expiry_cursor = None  # a new pass staggers from the window's oldest reach

    async def _save_cursor(self, cursor: int) -> None:
        # `greatest` in the statement: saves finishing out of order never go back.
        await self._retrying(campaign_runs.save_cursor, self._db, self.plan.id, cursor)

    def _background(self) -> trio.Nursery:
        assert self._marks is not None  # set by run()
        return self._marks

    async def _end_of_pass(self) -> bool:
        """The cursor reached the end: True when nothing is left to send or to
        resolve. Otherwise it waits for what is pending elsewhere (outcomes in
        flight, retries, requeue times, in-doubt resolution) and returns False."""
        while self._in_flight or self._marking:
            await self._in_flight_changed.wait()
        wakes = self._wakes  # a wake from here on must not be lost in the reads below
        if self._retries:
            await self._wait(self._retries[0][0])
            return False
        if self.cursor:
            self.cursor = 0  # a new pass over rows put back behind the cursor
            return False
        left = await self._retrying(recipients.unfinished, self._db, self.plan.id)
        if left.sending:
            # Nobody here sends them any more (an earlier actor of this campaign
            # crashed or was cut short): they may or may not have gone out.
            marked = await self._retrying(
                recipients.mark_abandoned_in_doubt, self._db, self.plan.id
            )
            log.warning("campaign %s: %d stranded sends are now in doubt", self.plan.id, marked)
            return False
        if left.pending:
            self._announce_deferred()
            requeued_at = await self._retrying(recipients.next_requeued_at, self._db, self.plan.id)
            now = self._clock.now()
            if requeued_at is not None and requeued_at > now:
                await self._wait(self._clock.trio_time_at(requeued_at), woken_since=wakes)
            else:
                await self._wait(trio.current_time() + _IDLE_RECHECK_SECONDS, woken_since=wakes)
            return False
        if left.in_doubt:
            await self._wait_for_in_doubt(wakes)
            return False
        return True

    async def _wait_for_in_doubt(self, wakes: int) -> None:
        timeout = timedelta(seconds=self._settings.delivery.in_doubt_timeout)
        oldest = await self._retrying(recipients.next_in_doubt_since, self._db, self.plan.id)
        if oldest is not None:
            log.warning("campaign %s: waiting for in-doubt sends to be resolved", self.plan.id)
            # A webhook resolving them sends a Recheck, which ends this wait early.
            await self._wait(self._clock.trio_time_at(oldest + timeout), woken_since=wakes)
        expired = await self._retrying(
            recipients.expire_in_doubt,
            self._db,
            self.plan.id,
            cutoff=self._clock.now() - timeout,
            resend=self._settings.delivery.on_in_doubt == "resend",
            now=self._clock.now(),
        )
        if expired:
            log.warning(
                "campaign %s: %d in-doubt sends timed out (%s)",
                self.plan.id,
                expired,
                self._settings.delivery.on_in_doubt,
            )

    # --- groups -------------------------------------------------------------------------

    async def _send(self, waiting: deque[PendingRecipient]) -> None:
        """Pace, mark and hand over `waiting` (and any retries that fall due)."""
        while True:
            waiting.extendleft(self._due_retries())
            if not waiting:
                return
            count = min(len(waiting), self._group_size())
            wake_at = self.bucket.next_due(trio.current_time()) - self._lead
            if self.bucket.rate_per_second * _SPAN < 1:
                wake_at = _on_the_grid(wake_at)  # a lone row: woken early, it loses no turn
            await self._wait(wake_at)
            account_due = await self._budgets.next_due(self._budget_key, self._account_rate)
            if account_due - self._lead > trio.current_time():
                await self._wait(account_due - self._lead)
                continue  # look again: a rate change or retries may have come meanwhile
            # A place on the wire for the mark first (a mark is a durable commit,
            # slower than a group's turns under load; the semaphore bounds how many
            # overlap): turns reserved and then held up waiting for it would be late
            # by the time the rows are marked, and go back to pending unwritten.
            await self._mark_slots.acquire()
            group, turns = await self._reserve_group(waiting, count)
            if not group:
                continue
            self._marking += len(group)
            self._background().start_soon(self._mark_and_hand_over, group, turns)

    async def _reserve_group(
        self, waiting: deque[PendingRecipient], count: int
    ) -> tuple[list[PendingRecipient], list[float]]:
        """Take sender slots and the turns of both paces due within the horizon for
        up to `count` rows of `waiting`: the group to mark, with each row's turn.
        The caller holds a mark slot: given back here when there is no group (no turn
        that soon) or this is cancelled, with the sender slots it took (a shared
        budget's reservation is a Redis round trip)."""
        slots = 0
        turns: list[float] = []
        try:
            slots = await self._pool.acquire_slots(count)
            now = trio.current_time()
            horizon = self._lead + _SPAN
            turns = self.bucket.reserve(now, slots, horizon)
            account_turns = await self._budgets.reserve(
                self._budget_key, self._account_rate, len(turns), horizon
            )
        except BaseException:
            self.bucket.give_back(len(turns))
            self._pool.release_slots(slots)
            self._mark_slots.release()
            raise
        # The campaign's turns the number had no turn for this soon (other campaigns
        # took them) are kept for its next group: lost, they would slow it down for good.
        self.bucket.give_back(len(turns) - len(account_turns))
        group = [waiting.popleft() for _ in account_turns]
        self._pool.release_slots(slots - len(group))
        if not group:
            self._mark_slots.release()
        return group, [max(a, b) for a, b in zip(turns, account_turns, strict=False)]

    async def _mark_and_hand_over(self, group: list[PendingRecipient], turns: list[float]) -> None:
        try:
            marked = await self._mark(group, turns)
        finally:
            self._marking -= len(group)
            self._mark_slots.release()
            self._signal_in_flight()
        if len(marked) < len(group) and not await self._still_running():
            self._not_running_here = True
            self._loop_scope.cancel()

    async def _mark(self, group: list[PendingRecipient], turns: list[float]) -> set[int]:
        started = trio.current_time()
        # Shielded: rows marked must be handed over, or they would sit `sending`.
        with trio.CancelScope(shield=True):
            try:
                marked = set(await self._mark_statement([r.id for r in group]))
            except DatabaseUnavailable:
                marked = set()  # nothing was marked; the rows are still pending
            except BaseException:
                # The group's own statement failed and was rolled back: nothing to
                # send, and the actor ends with the error; the slots are not its to keep.
                self._pool.release_slots(len(group))
                raise
            self._pool.release_slots(len(group) - len(marked))
            for recipient, turn in zip(group, turns, strict=True):
                if recipient.id in marked:
                    self._pool.submit(self._job(recipient, turn))
                    self._in_flight[recipient.id] = recipient
            self.dispatched += len(marked)
        # A slow mark counts at once, then fades over a few dozen marks: an average
        # lagged behind a loaded database, and every mark slower than its lead made
        # its group's first turns late.
        took = trio.current_time() - started
        self._mark_seconds = max(took, 0.95 * self._mark_seconds)
        self._lead = min(_MAX_LEAD, max(_MIN_LEAD, 1.5 * self._mark_seconds))
        if marked and self._reach_limited:
            last_turn = self._clock.now() + timedelta(seconds=max(turns) - trio.current_time())
            phones = [r.phone for r in group if r.id in marked]
            self._background().start_soon(self._touch_reach, phones, last_turn)
        return marked

    async def _mark_statement(self, ids: list[int]) -> list[int]:
        if self._marker is not None:
            return await self._marker.mark(self.plan.id, ids, now=self._clock.now())
        return await recipients.mark_sending(
            self._db, self.plan.id, ids, lease_owner=self._lease_owner, now=self._clock.now()
        )

    async def _touch_reach(self, phones: list[str], at: datetime) -> None:
        # Shielded (the run's end cancels its background tasks) but bounded: a
        # reach left at its reservation moment only makes that user's ETA early.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._settings.server.shutdown_grace_seconds
            await self._retrying(
                portfolio_reach.touch, self._db, self.plan.account_id, phones, at=at
            )

    def _job(self, recipient: PendingRecipient, turn: float) -> SendJob:
        plan = self.plan
        payload = render_payload(
            plan.message_type,
            plan.content_of(recipient.variant),
            recipient.variables,
            plan.template_variables,
            media_url=plan.media_url,
        )
        if plan.link_key is not None and self._settings.links.base_url:
            payload = with_tracked_links(
                payload,
                recipient.id,
                key=plan.link_key,
                urls=plan.tracked_urls,
                base_url=self._settings.links.base_url,
            )
        message = OutgoingMessage(
            recipient.id,
            recipient.phone,
            plan.message_type,  # type: ignore[arg-type]
            payload,
        )
        return SendJob(
            plan.id,
            self.endpoint,
            message,
            attempts=recipient.attempts,
            requeues=recipient.requeues,
            deferrals=recipient.deferrals,
            write_at=turn,
            account_rate=self._account_rate,
            gate=self.gate,
            epoch=self.gate.epoch,
            reply_to=self._recorded,
        )

    def _group_size(self) -> int:
        ahead = math.ceil(self.bucket.rate_per_second * (self._lead + _SPAN))
        return max(1, min(ahead, self._pool.concurrency))

    def _due_retries(self) -> list[PendingRecipient]:
        now = trio.current_time()
        due = []
        while self._retries and self._retries[0][0] <= now:
            due.append(heapq.heappop(self._retries)[2])
        return due

    # --- what the actor tells it --------------------------------------------------------

    def on_recorded(self, outcomes: Iterable[Outcome]) -> None:
        """Outcomes of its sends are stored: rows to send again go on the schedule."""
        now_wall, now = self._clock.now(), trio.current_time()
        scheduled = False
        for outcome in outcomes:
            recipient = self._in_flight.pop(outcome.recipient_id, None)
            if recipient is None or outcome.status != "pending" or outcome.pause_reason:
                continue
            if self.gate.closed:
                continue  # stopping: the next run finds it in the database
            delay = (outcome.not_before - now_wall).total_seconds() if outcome.not_before else 0.0
            again = PendingRecipient(
                recipient.id,
                recipient.phone,
                recipient.variables,
                recipient.attempts + outcome.attempts,
                recipient.requeues + int(outcome.requeued),
                recipient.deferrals + int(outcome.deferred),
                variant=recipient.variant,
            )
            heapq.heappush(self._retries, (now + max(0.0, delay), recipient.id, again))
            scheduled = True
        self._signal_in_flight()
        if scheduled:
            # Only a retry changes what the loop waits for; waking it for every
            # outcome cost each campaign a pass of its loop per message.
            self.wake()

    def _signal_in_flight(self) -> None:
        self._in_flight_changed.set()
        self._in_flight_changed = trio.Event()

    def set_throttle(self, throttle: Throttle) -> None:
        """A live rate change applies from the next send: sends timed at the old
        rate and not yet written go back and are timed again."""
        self.throttle = throttle
        self.bucket.set_rate(_per_second(throttle), trio.current_time())
        self.gate.epoch += 1
        self.wake()

    def close(self) -> None:
        """Stop: marked sends not yet written go back to pending."""
        self.gate.closed = True
        self._signal_in_flight()

    def wake(self) -> None:
        self._wakes += 1
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def wait_in_flight(self) -> None:
        """Until every marked send of this run has its outcome stored."""
        while self._in_flight or self._marking:
            await self._in_flight_changed.wait()

    # --- helpers ------------------------------------------------------------------------

    async def _wait(self, deadline: float, *, woken_since: int | None = None) -> None:
        """Sleep until `deadline`, or until something wants the dispatcher to look again:
        also a wake after the `_wakes` count `woken_since` (taken before the reads that
        decided this wait), so a wake that came during them is not lost."""
        if deadline <= trio.current_time():
            return
        if woken_since is not None and self._wakes != woken_since:
            return
        with trio.CancelScope(deadline=deadline) as scope:
            self._wait_scope = scope
            await trio.sleep_forever()
        self._wait_scope = None

    async def _still_running(self) -> bool:
        return bool(
            await self._retrying(
                leases.runs_here, self._db, self.plan.id, lease_owner=self._lease_owner
            )
        )

    async def _retrying(
        self, operation: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """One store operation, retried while the database is unreachable: an outage
        holds this campaign up, it never ends the actor."""
        return await retrying(f"running campaign {self.plan.id}", operation, *args, **kwargs)


class _Claim:
    """A batch read in the background; `result` waits for it."""

    def __init__(
        self, claim: Callable[[int], Awaitable[list[PendingRecipient]]], after_id: int
    ) -> None:
        self._claim = claim
        self._after_id = after_id
        self._done = trio.Event()
        self._batch: list[PendingRecipient] = []

    async def run(self) -> None:
        self._batch = await self._claim(self._after_id)
        self._done.set()

    async def result(self) -> list[PendingRecipient]:
        await self._done.wait()
        return self._batch


class NotRunningHere(Exception):
    """A mark found the campaign paused, cancelled or no longer ours."""


def _per_second(throttle: Throttle) -> float:
    return throttle.messagesPerMinute / 60
