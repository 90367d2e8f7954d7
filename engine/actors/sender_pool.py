"""The sender pool: a fixed set of sender tasks shared by every campaign.

Each sender task owns one gateway session (so its keep-alive connections need
no locking), takes jobs from the pool's inbox, waits for the account's budget
(one token bucket per WhatsApp account, shared by all its campaigns), sends,
retries transient failures with backoff, and replies with an `Outcome` on the
campaign's own channel.

Slots bound what is "in flight": a campaign reserves a slot before it marks a
recipient `sending` and frees it once the outcome is stored. So at most
`sender.concurrency` recipients are ever `sending`, which is also the most a
crash can leave in doubt.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import msgspec
import trio

from engine.actors.account_budget import AccountBudget, LocalAccountBudget
from engine.clock import WallClock
from engine.core.error_classes import ErrorClass, account_pause_reason, backoff_seconds, classify
from engine.gateway import Gateway, GatewaySession, SendResult
from engine.messages import Outcome, SendJob
from engine.settings import SenderSettings

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the send latency histogram exposed for monitoring.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AccountCounters(msgspec.Struct):
    sent: int = 0
    failed: int = 0
    retried: int = 0
    requeued: int = 0
    throttled: int = 0


class SenderPoolStatistics(msgspec.Struct, frozen=True):
    concurrency: int
    slots_in_use: int
    busy_senders: int
    accounts: dict[str, AccountCounters]
    latency_bucket_counts: tuple[int, ...]  # one per LATENCY_BUCKETS entry, plus +Inf
    latency_sum_seconds: float
    requests: int


class SenderPool:
    """Handle returned by `run`."""

    def __init__(self, inbox: trio.MemorySendChannel[SendJob], concurrency: int) -> None:
        self._inbox = inbox
        self._concurrency = concurrency
        self._slots_in_use = 0
        self._slot_freed = trio.Event()
        self._starved_callbacks: list[Callable[[], None]] = []
        self._busy = 0
        self._accounts: defaultdict[str, AccountCounters] = defaultdict(AccountCounters)
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._requests = 0

    @property
    def concurrency(self) -> int:
        return self._concurrency

    async def acquire_slots(self, wanted: int) -> int:
        """Wait until a slot is free, then take up to `wanted` free slots."""
        while self._slots_in_use >= self._concurrency:
            # Campaigns holding slots for outcomes they have yet to store are
            # told, so they store them now instead of lingering for a batch.
            for on_starved in list(self._starved_callbacks):
                on_starved()
            await self._slot_freed.wait()
        granted = min(wanted, self._concurrency - self._slots_in_use)
        self._slots_in_use += granted
        return granted

    def when_starved(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` whenever someone waits for a slot; returns the unsubscriber."""
        self._starved_callbacks.append(callback)
        return lambda: self._starved_callbacks.remove(callback)

    @property
    def starved(self) -> bool:
        return self._slots_in_use >= self._concurrency

    def release_slots(self, count: int) -> None:
        if count <= 0:
            return
        self._slots_in_use -= count
        self._slot_freed.set()
        self._slot_freed = trio.Event()

    def submit(self, job: SendJob) -> None:
        """Hand over a job whose slot the caller holds; never blocks (slots bound the inbox)."""
        self._inbox.send_nowait(job)

    def statistics(self) -> SenderPoolStatistics:
        return SenderPoolStatistics(
            concurrency=self._concurrency,
            slots_in_use=self._slots_in_use,
            busy_senders=self._busy,
            accounts={k: msgspec.structs.replace(v) for k, v in self._accounts.items()},
            latency_bucket_counts=tuple(self._latency_counts),
            latency_sum_seconds=self._latency_sum,
            requests=self._requests,
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
        budgets: AccountBudget,
        settings: SenderSettings,
        clock: WallClock,
        rng: random.Random,
    ) -> None:
        self._pool = pool
        self._budgets = budgets
        self._settings = settings
        self._clock = clock
        self._rng = rng

    async def serve(
        self, session: GatewaySession, inbox: trio.MemoryReceiveChannel[SendJob]
    ) -> None:
        async for job in inbox:
            self._pool._busy += 1
            try:
                outcome = await self._deliver(session, job)
            finally:
                self._pool._busy -= 1
            try:
                await job.reply_to.send(outcome)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The campaign actor is gone; its row stays `sending` and is
                # resolved as in doubt by whoever takes the campaign over.
                log.warning(
                    "campaign %s: outcome for recipient %s dropped",
                    job.campaign_id,
                    job.message.recipient_id,
                )

    async def _deliver(self, session: GatewaySession, job: SendJob) -> Outcome:
        account = job.endpoint.account_id
        counters = self._pool._accounts[account]
        recipient = job.message.recipient_id
        attempt = 0
        while True:
            await self._budgets.take(account, job.account_messages_per_second)
            attempt += 1
            started = trio.current_time()
            result = await session.send(job.endpoint, job.message)
            self._pool._observe_latency(trio.current_time() - started)
            if result.ok:
                counters.sent += 1
                return Outcome(
                    recipient, "sent", attempt, provider_message_id=result.provider_message_id
                )
            error_class = classify(result.http_status, result.error_code)
            log.debug(
                "campaign %s: recipient %s attempt %d: %s %s",
                job.campaign_id,
                recipient,
                attempt,
                error_class.name,
                _describe(result),
            )
            if error_class is ErrorClass.THROTTLED:
                counters.throttled += 1
                await self._budgets.slow_down(account, self._settings.throttle_slowdown_seconds)
            if error_class in (ErrorClass.TRANSIENT, ErrorClass.THROTTLED):
                if attempt < self._settings.max_attempts:
                    counters.retried += 1
                    await trio.sleep(
                        backoff_seconds(
                            attempt,
                            base=self._settings.backoff_base_seconds,
                            cap=self._settings.backoff_max_seconds,
                            jitter=self._rng.random(),
                        )
                    )
                    continue
                counters.failed += 1
                return _failed(recipient, attempt, result)
            if error_class is ErrorClass.REQUEUE:
                counters.requeued += 1
                not_before = self._clock.now() + timedelta(
                    seconds=self._settings.requeue_delay_seconds
                )
                return Outcome(
                    recipient,
                    "pending",
                    attempt,
                    error_code=_code(result),
                    error_message=result.error_message,
                    not_before=not_before,
                )
            if error_class is ErrorClass.ACCOUNT:
                # Not the recipient's fault: it goes back to pending and the
                # campaign pauses until the operator fixes the account.
                reason = account_pause_reason(result.error_code or 0, result.error_message)
                return Outcome(
                    recipient,
                    "pending",
                    attempt,
                    error_code=_code(result),
                    error_message=result.error_message,
                    pause_reason=reason,
                )
            counters.failed += 1
            return _failed(recipient, attempt, result)


def _code(result: SendResult) -> str | None:
    if result.error_code is not None:
        return str(result.error_code)
    if result.http_status is not None:
        return f"http_{result.http_status}"
    return "network_error"


def _failed(recipient: int, attempts: int, result: SendResult) -> Outcome:
    return Outcome(
        recipient,
        "failed",
        attempts,
        error_code=_code(result),
        error_message=result.error_message or _describe(result),
    )


def _describe(result: SendResult) -> str:
    if result.http_status is None:
        return result.error_message or "no answer"
    return f"HTTP {result.http_status}: {result.error_message or ''}".strip()


async def run(
    gateway: Gateway,
    settings: SenderSettings,
    clock: WallClock,
    *,
    budgets: AccountBudget | None = None,
    seed: int | None = None,
    task_status: trio.TaskStatus[SenderPool] = trio.TASK_STATUS_IGNORED,
) -> None:
    concurrency = settings.concurrency
    send, receive = trio.open_memory_channel[SendJob](concurrency)
    pool = SenderPool(send, concurrency)
    budgets = budgets or LocalAccountBudget()
    rng = random.Random(seed)

    async def sender_task(inbox: trio.MemoryReceiveChannel[SendJob]) -> None:
        async with inbox, gateway.open_session() as session:
            await _Sender(pool, budgets, settings, clock, rng).serve(session, inbox)

    async with send, receive, trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(sender_task, receive.clone())
        task_status.started(pool)
