"""Transient send errors are retried with exponential backoff, up to `sender.max_attempts`."""

from __future__ import annotations

import trio
import trio.testing

from engine.gateway import OutgoingMessage, SendResult
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import make_account, make_campaign, make_contacts, phone
from tests.virtual_time import virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here


TRANSIENT = SendResult(ok=False, http_status=400, error_code=131000, error_message="Something")


async def _run_campaign(db: Database, gateway: ScriptedGateway, recipients: int) -> str:
    account = await make_account(db)
    await make_contacts(db, recipients)
    log = EventLog()
    async with trio.open_nursery() as nursery:
        async with running_engine(db, gateway, engine_settings()) as engine:
            await nursery.start(log.collect, engine)
            campaign = await make_campaign(db, account, messages_per_minute=6_000)
            await log.wait_for("campaign:completed", campaign)
        nursery.cancel_scope.cancel()
    return campaign


async def _recipient(db: Database, n: int) -> tuple[int, str, int, str | None]:
    row = await db.fetchrow(
        "SELECT id, status, attempts, error_code FROM campaign_recipients WHERE phone = $1",
        phone(n),
    )
    assert row is not None
    return row["id"], row["status"], row["attempts"], row["error_code"]


def _send_times(gateway: ScriptedGateway, recipient_id: int) -> list[float]:
    return [s.at for s in gateway.sends if s.message.recipient_id == recipient_id]


async def test_two_transient_failures_then_success_is_sent_on_the_third_attempt(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    flaky = phone(1)

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        return TRANSIENT if message.to == flaky and attempt <= 2 else None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        await _run_campaign(db, gateway, 5)

    recipient_id, status, attempts, _ = await _recipient(db, 1)
    assert (status, attempts) == ("sent", 3)
    assert gateway.sends_for(recipient_id) == 3
    # Backoff (base 1 s, equal jitter): retry 1 waits [0.5, 1), retry 2 waits [1, 2),
    # measured from the end of the failed request (latency 0.01 s).
    first, second, third = _send_times(gateway, recipient_id)
    assert 0.5 <= second - first < 1.0 + 0.02
    assert 1.0 <= third - second < 2.0 + 0.02
    for n in (0, 2, 3, 4):
        other_id, other_status, other_attempts, _ = await _recipient(db, n)
        assert (other_status, other_attempts) == ("sent", 1)
        assert gateway.sends_for(other_id) == 1


async def test_three_transient_failures_fail_the_recipient_after_three_attempts(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    doomed = phone(2)

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        return TRANSIENT if message.to == doomed else None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        await _run_campaign(db, gateway, 5)

    recipient_id, status, attempts, error_code = await _recipient(db, 2)
    assert (status, attempts, error_code) == ("failed", 3, "131000")
    # Never a fourth request.
    assert gateway.sends_for(recipient_id) == 3
    times = _send_times(gateway, recipient_id)
    assert times[1] - times[0] >= 0.5 and times[2] - times[1] >= 1.0
    for n in (0, 1, 3, 4):
        other_id, other_status, _, _ = await _recipient(db, n)
        assert other_status == "sent" and gateway.sends_for(other_id) == 1
