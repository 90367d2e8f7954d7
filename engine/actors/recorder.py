"""The recorder: stores every campaign's send outcomes, one statement per group commit.

Senders hand it an outcome as soon as the HTTP exchange is over, so a sender's
slot covers the request alone, never a database round trip. It stores what
arrived while the previous statement ran (lingering at most
`engine.record_flush_interval_ms` for more), then tells each campaign actor
which of its outcomes are stored.

Credits bound what is answered but not yet stored: a sender takes one before
handing over an outcome and the recorder returns it once the outcome is
stored. So a crash leaves at most `credits` answered rows in doubt, on top of
the requests in flight (docs/delivery-guarantees.md, "crash bound"), and a slow
database slows the senders down instead of piling outcomes up in memory.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import msgspec
import trio

from engine.clock import WallClock
from engine.core.metrics import CampaignStats
from engine.messages import Outcome, Recorded
from engine.store import recipients
from engine.store.database import Database

log = logging.getLogger(__name__)

_RETRY_FIRST_SECONDS = 0.05
_RETRY_MAX_SECONDS = 5.0


class RecorderStatistics(msgspec.Struct, frozen=True):
    stored: int
    batches: int
    waiting: int  # answered, not yet stored
    credits: int
    failed_attempts: int  # statements that failed and were retried


class _Pending(msgspec.Struct, frozen=True):
    campaign_id: str
    reply_to: trio.MemorySendChannel[Recorded]
    outcome: Outcome


class Recorder:
    """Handle returned by `run`."""

    def __init__(self, inbox: trio.MemorySendChannel[_Pending], credits: int) -> None:
        self._inbox = inbox
        self._credits = trio.Semaphore(credits)
        self._credit_count = credits
        # Store once half the credits wait: the other half keeps senders going
        # while the statement runs, so they never wait for a credit in steady state.
        self._enough = max(1, credits // 2)
        self._queued = 0  # handed over, not yet in a batch being stored
        # Set by a sender once a batch is worth storing: the recorder wakes once per
        # batch, not once per outcome (a scheduler pass each, at thousands a second).
        self._batch_ready = trio.Event()
        self._stored = 0
        self._batches = 0
        self._failed_attempts = 0

    async def submit(
        self, campaign_id: str, outcome: Outcome, reply_to: trio.MemorySendChannel[Recorded]
    ) -> None:
        """Hand over one outcome; waits only when `credits` outcomes are still unstored.
        Not a checkpoint while credits last: the sender's next request is one."""
        try:
            self._credits.acquire_nowait()
        except trio.WouldBlock:
            await self._credits.acquire()
        # Never blocks: the inbox holds as many as there are credits.
        self._inbox.send_nowait(_Pending(campaign_id, reply_to, outcome))
        self._queued += 1
        if self._queued >= self._enough or self.starved:
            self._batch_ready.set()

    @property
    def starved(self) -> bool:
        """Someone waits for a credit: store now rather than linger."""
        return self._credits.value == 0

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            stored=self._stored,
            batches=self._batches,
            waiting=self._credit_count - self._credits.value,
            credits=self._credit_count,
            failed_attempts=self._failed_attempts,
        )

    async def serve(
        self,
        inbox: trio.MemoryReceiveChannel[_Pending],
        db: Database,
        clock: WallClock,
        linger: float,
    ) -> None:
        async for first in inbox:
            batch = await self._gather(first, inbox, linger)
            stored = await self._store(db, clock, [p.outcome for p in batch])
            for _ in batch:
                self._credits.release()
            self._stored += len(batch)
            self._batches += 1
            by_run: defaultdict[tuple[str, trio.MemorySendChannel[Recorded]], list[Outcome]]
            by_run = defaultdict(list)
            for pending in batch:
                by_run[pending.campaign_id, pending.reply_to].append(pending.outcome)
            for (campaign_id, reply_to), outcomes in by_run.items():
                stats = stored.stats.get(campaign_id, CampaignStats())
                try:
                    reply_to.send_nowait(Recorded(outcomes, stats))
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # its actor is gone (or overwhelmed): the database has it all

    async def _gather(
        self, first: _Pending, inbox: trio.MemoryReceiveChannel[_Pending], linger: float
    ) -> list[_Pending]:
        batch = [first]
        self._batch_ready = trio.Event()  # set by a submit from here on, when it is time
        if self._queued < self._enough and not self.starved:
            with trio.move_on_after(linger):
                await self._batch_ready.wait()
        while True:
            try:
                batch.append(inbox.receive_nowait())
            except trio.WouldBlock:
                self._queued = 0  # all taken: nothing was handed over meanwhile
                return batch

    async def _store(
        self, db: Database, clock: WallClock, outcomes: list[Outcome]
    ) -> recipients.StoredOutcomes:
        """Retry until stored: an outcome dropped here would leave its row `sending`
        (in doubt, for whoever takes the campaign over). Each attempt is shielded,
        so a stopping daemon still stores what was answered; the waits between
        attempts are not, so a database that is down does not hold up the stop."""
        delay = _RETRY_FIRST_SECONDS
        while True:
            try:
                with trio.CancelScope(shield=True):
                    return await recipients.record_outcomes(db, outcomes, now=clock.now())
            except Exception as error:  # any failure: keep them and retry
                self._failed_attempts += 1
                log.warning(
                    "storing %d outcomes failed (%s: %s); retrying in %.2f s",
                    len(outcomes),
                    type(error).__name__,
                    error,
                    delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)


async def run(
    db: Database,
    clock: WallClock,
    *,
    credits: int,
    linger: float,
    task_status: trio.TaskStatus[Recorder] = trio.TASK_STATUS_IGNORED,
) -> None:
    send, receive = trio.open_memory_channel[_Pending](credits)
    recorder = Recorder(send, credits)
    async with send, receive:
        task_status.started(recorder)
        await recorder.serve(receive, db, clock, linger)
