"""A send handed to its sender after its turn (engine/actors/sender_pool.py): a
slow mark made it late, so it takes the number's next free turn if one comes
within `RETIME_HORIZON_SECONDS`, and only otherwise goes back to `pending`
unwritten. Either way nothing is written off its turn."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from engine.actors.account_budget import LATE_TOLERANCE_SECONDS, LocalAccountBudget, spacing
from engine.actors.sender_pool import RETIME_HORIZON_SECONDS, SenderPool, _Sender, retry_policy
from engine.clock import WallClock
from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.messages import DispatchGate, Outcome, Recorded, SendJob
from engine.settings import DeliverySettings, SenderSettings
from tests.fake_gateway import ScriptedGateway

RATE = 100.0  # the number's messages per second: turns about 10 ms apart
ENDPOINT = AccountEndpoint("account", "http://cloud.test/v21.0", "number", "token")


def job(write_at: float, reply_to: trio.MemorySendChannel[Recorded]) -> SendJob:
    message = OutgoingMessage(7, "+15550000007", "text", {"body": "hi"})
    return SendJob(
        "campaign",
        ENDPOINT,
        message,
        attempts=0,
        requeues=0,
        deferrals=0,
        write_at=write_at,
        account_rate=RATE,
        gate=DispatchGate(),
        epoch=0,
        reply_to=reply_to,
    )


async def dispatch_late(
    budget: LocalAccountBudget, gateway: ScriptedGateway
) -> tuple[Outcome, SenderPool]:
    """One job whose turn was 30 ms ago (beyond the tolerance), through one sender."""
    send, _ = trio.open_memory_channel[SendJob](2)
    pool = SenderPool(send, concurrency=1, prefetch=1)
    assert await pool.acquire_slots(1) == 1
    settings = SenderSettings()
    sender = _Sender(
        pool,
        recorder=None,  # type: ignore[arg-type]  # _dispatch stores nothing
        budgets=budget,
        policy=retry_policy(settings, DeliverySettings()),
        clock=WallClock(),
        rng=random.Random(0),
    )
    late = LATE_TOLERANCE_SECONDS + 0.005
    reply_to, _ = trio.open_memory_channel[Recorded](1)
    return await sender._dispatch(gateway, job(trio.current_time() - late, reply_to)), pool


async def test_a_late_send_takes_the_next_free_turn_of_its_number(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = LocalAccountBudget()
    # Later groups hold the next 3 turns: the late send comes after them.
    held = await budget.reserve("number", RATE, 3, horizon=1.0)
    gateway = ScriptedGateway()

    outcome, pool = await dispatch_late(budget, gateway)

    assert outcome.status == "sent"
    assert [s.at for s in gateway.sends] == [pytest.approx(held[-1] + spacing(RATE))]
    assert pool.statistics().released == 0


async def test_a_late_send_goes_back_to_pending_when_no_turn_is_free_soon(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = LocalAccountBudget()
    # The number's turns are taken further ahead than a late send may wait.
    count = int(RETIME_HORIZON_SECONDS / spacing(RATE)) + 2
    await budget.reserve("number", RATE, count, horizon=1.0)
    gateway = ScriptedGateway()

    outcome, pool = await dispatch_late(budget, gateway)

    assert (outcome.status, outcome.attempts) == ("pending", 0)
    assert gateway.sends == []
    assert pool.statistics().released == 1  # counted: GET /metrics shows it


async def test_a_late_send_to_a_slowed_number_goes_back_to_pending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = LocalAccountBudget()
    await budget.slow_down("number", 5.0)  # WhatsApp answered 130429
    gateway = ScriptedGateway()

    outcome, pool = await dispatch_late(budget, gateway)

    assert (outcome.status, outcome.attempts) == ("pending", 0)
    assert gateway.sends == []
    assert pool.statistics().released == 1  # counted: GET /metrics shows it
