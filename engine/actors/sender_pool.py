"""The sender pool: a fixed set of sender tasks shared by every campaign.

Each sender task owns one gateway session (so its keep-alive connections need
no locking), takes jobs from the pool's inbox, writes each at its turn, and
hands the answer to the recorder. What an answer means for the recipient is
decided by `engine.core.retry.decide`; every wait it calls for (backoff,
requeue, an account slow-down) happens with the recipient back in `pending`.

Slots bound what is in flight: a campaign takes a slot just before it marks a
recipient `sending`, and the sender frees it as soon as the HTTP exchange is
over, before the outcome is stored. A slot therefore covers one request and a
mark statement and the few ms to its turn, never a database write of outcomes,
and at most `sender.concurrency + sender.prefetch` recipients are marked and not
yet answered (docs/delivery-guarantees.md, "crash bound").
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections import defaultdict
from datetime import timedelta

import msgspec
import trio

from engine.actors.account_budget import LATE_TOLERANCE_SECONDS, AccountBudget
from engine.actors.recorder import Recorder
from engine.clock import WallClock
from engine.core.retry import RetryPolicy, SendDecision, decide
from engine.gateway import Gateway, GatewaySession
from engine.messages import Outcome, SendJob
from engine.settings import DeliverySettings, SenderSettings

log = logging.getLogger(__name__)

# A late job's new turn may be this far off, no further than groups are marked
# ahead of their turns anyway (engine/actors/campaign/dispatch.py: lead + span).
# Under load a mark can take longer than its lead: its group's turns have passed
# when it is handed over, and the number's next free turns are that far ahead.
# Sent back to pending instead, each such row would cost a second mark and a
# record, making a loaded database slower still.
RETIME_HORIZON_SECONDS = 0.05

# Upper bounds (seconds) of the send latency histogram exposed for monitoring.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AccountCounters(msgspec.Struct):
    sent: int = 0
    failed: int = 0
    retried: int = 0
    requeued: int = 0
    throttled: int = 0
    in_doubt: int = 0


class SenderPoolStatistics(msgspec.Struct, frozen=True):
    concurrency: int
    slots: int
    slots_in_use: int
    busy_senders: int
    accounts: dict[str, AccountCounters]
    latency_bucket_counts: tuple[int, ...]  # one per LATENCY_BUCKETS entry, plus +Inf
    latency_sum_seconds: float
    requests: int
    released: int  # marked sends put back unwritten (a pause, a rate change, a late turn)


class SenderPool:
    """Handle returned by `run`."""

    def __init__(
        self, inbox: trio.MemorySendChannel[SendJob], concurrency: int, prefetch: int
    ) -> None:
        self._inbox = inbox
        self._concurrency = concurrency
        # More slots than senders: a group is marked a little before its turns
        # (engine/actors/campaign/dispatch.py), so no sender waits for a mark.
        self._slots = concurrency + prefetch
        # When slots are what limits, a dispatcher waits for this many to be free
        # rather than marking each freed one alone: one statement marks a group,
        # and half the prefetch still queues ahead of the senders meanwhile.
        self._group_floor = max(1, prefetch // 2)
        self._slots_in_use = 0
        # Waiters are woken one per freed slot, never all at once: with a thousand
        # campaigns waiting, waking each of them for every freed slot cost more
        # than the sends.
        self._slot_waiters = trio.lowlevel.ParkingLot()
        self._busy = 0
        self._accounts: defaultdict[str, AccountCounters] = defaultdict(AccountCounters)
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._requests = 0
        self._released = 0
        self._timed: list[tuple[float, int, SendJob]] = []  # (write_at, order, job)
        self._order = itertools.count()
        self._earliest_changed = trio.Event()

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def slots(self) -> int:
        """Sends that may be marked and not yet answered, pool-wide."""
        return self._slots

    async def acquire_slots(self, wanted: int) -> int:
        """Wait until enough slots are free for a group worth a statement (up to
        half the prefetch, never more than `wanted`), then take up to `wanted`."""
        enough = min(max(1, wanted), self._group_floor)
        while self._slots - self._slots_in_use < enough:
            await self._slot_waiters.park()
        granted = min(wanted, self._slots - self._slots_in_use)
        self._slots_in_use += granted
        return granted

    def release_slots(self, count: int) -> None:
        if count <= 0:
            return
        self._slots_in_use -= count
        self._slot_waiters.unpark(count=count)

    def submit(self, job: SendJob) -> None:
        """Hand over a job whose slot the caller holds; never blocks (slots bound the
        inbox). A job reaches a sender at its turn (`write_at`), not before: senders
        spend their time on requests, never waiting for a turn."""
        if job.write_at <= trio.current_time():
            self._inbox.send_nowait(job)
            return
        heapq.heappush(self._timed, (job.write_at, next(self._order), job))
        if self._timed[0][2] is job:
            self._earliest_changed.set()

    async def release_timed(self) -> None:
        """Move each waiting job to the senders at its turn (one task per pool)."""
        while True:
            self._earliest_changed = trio.Event()
            if not self._timed:
                await self._earliest_changed.wait()
                continue
            with trio.move_on_at(self._timed[0][0]):
                await self._earliest_changed.wait()
                continue
            now = trio.current_time()
            while self._timed and self._timed[0][0] <= now:
                self._inbox.send_nowait(heapq.heappop(self._timed)[2])

    def statistics(self) -> SenderPoolStatistics:
        return SenderPoolStatistics(
            concurrency=self._concurrency,
            slots=self._slots,
            slots_in_use=self._slots_in_use,
            busy_senders=self._busy,
            accounts={k: msgspec.structs.replace(v) for k, v in self._accounts.items()},
            latency_bucket_counts=tuple(self._latency_counts),
            latency_sum_seconds=self._latency_sum,
            requests=self._requests,
            released=self._released,
        )

    def _observe_latency(self, seconds: float) -> None:
        self._requests += 1
        self._latency_sum += seconds
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self._latency_counts[index] += 1
                return
        self._latency_counts[-1] += 1


class _Sender:
    def __init__(
        self,
        pool: SenderPool,
        recorder: Recorder,
        budgets: AccountBudget,
        policy: RetryPolicy,
        clock: WallClock,
        rng: random.Random,
    ) -> None:
        self._pool = pool
        self._recorder = recorder
        self._budgets = budgets
        self._policy = policy
        self._clock = clock
        self._rng = rng

    async def serve(
        self, session: GatewaySession, inbox: trio.MemoryReceiveChannel[SendJob]
    ) -> None:
        while True:
            try:
                # A job already waiting is taken without a scheduler pass (one per
                # message, at thousands a second): the request is this loop's checkpoint.
                job = inbox.receive_nowait()
            except trio.WouldBlock:
                try:
                    job = await inbox.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            outcome = await self._dispatch(session, job)
            await self._recorder.submit(job.campaign_id, outcome, job.reply_to)

    async def _dispatch(self, session: GatewaySession, job: SendJob) -> Outcome:
        """Write the job at its turn; the slot is free again when this returns."""
        pool = self._pool
        try:
            if trio.current_time() - job.write_at > LATE_TOLERANCE_SECONDS:
                # Written long after its turn (a slow mark, a busy process), it could
                # share a rolling second with the number's next turns: it takes a new
                # turn, or goes back to pending when none is free that soon.
                turns = await self._budgets.reserve(
                    job.endpoint.phone_number_id, job.account_rate, 1, RETIME_HORIZON_SECONDS
                )
                if not turns:
                    pool._released += 1
                    return Outcome(job.message.recipient_id, "pending", 0)
                await trio.sleep_until(turns[0])
            if not job.gate.allows(job.epoch):
                pool._released += 1
                return Outcome(job.message.recipient_id, "pending", 0)
            pool._busy += 1
            started = trio.current_time()
            try:
                result = await session.send(job.endpoint, job.message)
            finally:
                pool._busy -= 1
            pool._observe_latency(trio.current_time() - started)
        finally:
            pool.release_slots(1)
        decision = decide(
            result,
            attempts=job.attempts + 1,
            requeues=job.requeues,
            deferrals=job.deferrals,
            policy=self._policy,
            jitter=self._rng.random(),
        )
        self._count(job, decision)
        if decision.slow_account_seconds:
            await self._budgets.slow_down(
                job.endpoint.phone_number_id, decision.slow_account_seconds
            )
        if decision.kind == "pause":
            job.gate.closed = True  # its other marked sends go back unwritten
        return self._outcome(job, decision)

    def _outcome(self, job: SendJob, decision: SendDecision) -> Outcome:
        recipient = job.message.recipient_id
        match decision.kind:
            case "sent":
                return Outcome(
                    recipient, "sent", 1, provider_message_id=decision.provider_message_id
                )
            case "retry" | "requeue" | "defer":
                not_before = self._clock.now() + timedelta(seconds=decision.delay)
                return Outcome(
                    recipient,
                    "pending",
                    1,
                    error_code=decision.error_code,
                    error_message=decision.error_message,
                    not_before=not_before,
                    requeued=decision.kind == "requeue",
                    deferred=decision.kind == "defer",
                )
            case "pause":
                # Not the recipient's fault: it waits, pending, for the operator.
                return Outcome(
                    recipient,
                    "pending",
                    1,
                    error_code=decision.error_code,
                    error_message=decision.error_message,
                    pause_reason=decision.pause_reason,
                    pause_number=decision.pause_number,
                )
            case "in_doubt" | "failed":
                return Outcome(
                    recipient,
                    decision.kind,
                    1,
                    error_code=decision.error_code,
                    error_message=decision.error_message,
                )

    def _count(self, job: SendJob, decision: SendDecision) -> None:
        counters = self._pool._accounts[job.endpoint.account_id]
        if decision.slow_account_seconds:
            counters.throttled += 1
        match decision.kind:
            case "sent":
                counters.sent += 1
            case "failed":
                counters.failed += 1
            case "retry":
                counters.retried += 1
            case "requeue" | "defer":
                counters.requeued += 1
            case "in_doubt":
                counters.in_doubt += 1
            case "pause":
                pass
        if decision.kind != "sent":
            log.debug(
                "campaign %s: recipient %s attempt %d: %s %s",
                job.campaign_id,
                job.message.recipient_id,
                job.attempts + 1,
                decision.kind,
                decision.error_message,
            )


def retry_policy(settings: SenderSettings, delivery: DeliverySettings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_base_seconds=settings.backoff_base_seconds,
        backoff_max_seconds=settings.backoff_max_seconds,
        requeue_delay_seconds=settings.requeue_delay_seconds,
        max_requeues=settings.max_requeues,
        throttle_slowdown_seconds=settings.throttle_slowdown_seconds,
        max_deferrals=delivery.max_deferrals,
        deferral_seconds=delivery.deferral_seconds,
    )


async def run(
    gateway: Gateway,
    settings: SenderSettings,
    clock: WallClock,
    recorder: Recorder,
    budgets: AccountBudget,
    *,
    delivery: DeliverySettings | None = None,
    seed: int | None = None,
    task_status: trio.TaskStatus[SenderPool] = trio.TASK_STATUS_IGNORED,
) -> None:
    concurrency = settings.concurrency
    # At most one sender's worth: when every sender is busy, a send marked ahead
    # still waits for one request at most before it is written.
    prefetch = min(settings.prefetch, concurrency)
    send, receive = trio.open_memory_channel[SendJob](concurrency + prefetch)
    pool = SenderPool(send, concurrency, prefetch)
    policy = retry_policy(settings, delivery or DeliverySettings())
    rng = random.Random(seed)

    async def sender_task(inbox: trio.MemoryReceiveChannel[SendJob]) -> None:
        async with inbox, gateway.open_session() as session:
            await _Sender(pool, recorder, budgets, policy, clock, rng).serve(session, inbox)

    async with send, receive, trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(sender_task, receive.clone())
        nursery.start_soon(pool.release_timed)
        task_status.started(pool)
