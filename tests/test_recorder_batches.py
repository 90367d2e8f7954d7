"""The recorder's group commit (engine/actors/recorder.py): a batch is stored as
soon as half the credits wait, a smaller one once the linger is over, and every
outcome's credit comes back once it is stored."""

from __future__ import annotations

import trio
import trio.testing

from engine.actors import recorder as recorder_actor
from engine.clock import WallClock
from engine.messages import Outcome, Recorded
from engine.store.database import Database

LINGER = 60.0  # far longer than any test waits: only the mock clock ends it
CREDITS = 8


def outcomes(first_id: int, count: int) -> list[Outcome]:
    # Ids no row has: the statement stores nothing, the batching is what is seen.
    return [Outcome(first_id + i, "sent", 1, f"wamid.{first_id + i}") for i in range(count)]


async def test_half_the_credits_waiting_are_stored_without_lingering(
    db: Database, mock_clock: trio.testing.MockClock
) -> None:
    replies, recorded = trio.open_memory_channel[Recorded](16)
    async with trio.open_nursery() as nursery:
        recorder = await nursery.start(
            lambda task_status: recorder_actor.run(
                db, WallClock(), credits=CREDITS, linger=LINGER, task_status=task_status
            )
        )
        for outcome in outcomes(1_000_000, CREDITS // 2):
            await recorder.submit("c-1", outcome, replies)
        reply = await recorded.receive()  # the mock clock never moves: no linger passed
        assert [o.recipient_id for o in reply.outcomes] == list(range(1_000_000, 1_000_004))
        statistics = recorder.statistics()
        assert (statistics.batches, statistics.stored, statistics.waiting) == (1, 4, 0)
        nursery.cancel_scope.cancel()


async def test_a_smaller_batch_waits_for_more_or_for_the_linger(
    db: Database, mock_clock: trio.testing.MockClock
) -> None:
    replies, recorded = trio.open_memory_channel[Recorded](16)
    few = CREDITS // 2 - 1
    async with trio.open_nursery() as nursery:
        recorder = await nursery.start(
            lambda task_status: recorder_actor.run(
                db, WallClock(), credits=CREDITS, linger=LINGER, task_status=task_status
            )
        )

        async def hand_over_a_few_then_let_the_recorder_run(first_id: int) -> None:
            for outcome in outcomes(first_id, few):
                await recorder.submit("c-1", outcome, replies)
            # A recorder that stored them now would be storing (or done) from here on.
            await trio.testing.wait_all_tasks_blocked()

        await hand_over_a_few_then_let_the_recorder_run(2_000_000)
        await recorder.submit("c-1", outcomes(2_000_100, 1)[0], replies)
        assert len((await recorded.receive()).outcomes) == few + 1  # one batch, once enough

        await hand_over_a_few_then_let_the_recorder_run(2_000_200)
        mock_clock.jump(LINGER)
        assert len((await recorded.receive()).outcomes) == few  # the linger is over

        # The count of what waits starts again with each batch.
        await hand_over_a_few_then_let_the_recorder_run(2_000_300)
        await recorder.submit("c-1", outcomes(2_000_400, 1)[0], replies)
        assert len((await recorded.receive()).outcomes) == few + 1
        assert recorder.statistics().batches == 3
        nursery.cancel_scope.cancel()
