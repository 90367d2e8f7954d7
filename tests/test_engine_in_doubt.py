"""A running campaign waiting for its sends in doubt goes on at once when an operator
settles them (engine/store/in_doubt.py: a recheck NOTIFY reaches its actor)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from engine.gateway import OutgoingMessage, SendResult
from engine.messages import CampaignEvent
from engine.store import recipients
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_campaign, make_contacts
from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here

TIMEOUT = 900.0


def lost_answers(in_doubt: set[int]) -> Callable[[OutgoingMessage, int], SendResult | None]:
    """These recipients' requests are written and their answers never come back."""

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        if message.recipient_id in in_doubt:
            return SendResult(ok=False, error_message="read timed out", may_have_arrived=True)
        return None

    return script


async def until(log: EventLog, campaign: str, *, in_doubt: int, pending: int) -> CampaignEvent:
    """The campaign's stats event that shows these counts."""
    while True:
        for event in log.of(campaign, "campaign:stats"):
            stats = event.payload["stats"]
            if (stats["in_doubt"], stats["pending"]) == (in_doubt, pending):
                return event
        await log._changed.wait()


@pytest.mark.parametrize(("action", "final"), [("fail", "failed"), ("resend", "sent")])
async def test_settling_sends_in_doubt_lets_a_waiting_campaign_finish_at_once(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock, action: str, final: str
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    settings = engine_settings(
        sender_concurrency="1",
        engine_stats_every="1",
        delivery_in_doubt_timeout=str(TIMEOUT),
    )
    log = EventLog()
    with trio.fail_after(36_000):
        account = await make_account(db)
        await make_contacts(db, 10)
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:
                await nursery.start(log.collect, engine)
                gateway.block_after(0)
                campaign = await make_campaign(db, account, messages_per_minute=6_000)
                # The first three sent (in id order, one at a time) are lost: their
                # outcomes are stored before the last success's stats are reported.
                first = await db.fetch(
                    "SELECT id FROM campaign_recipients WHERE campaign_id = $1 ORDER BY id LIMIT 3",
                    campaign,
                )
                gateway.script = lost_answers({r["id"] for r in first})
                gateway.release()
                await until(log, campaign, in_doubt=3, pending=0)
                waiting_since = trio.current_time()
                gateway.script = None  # a resend is answered
                with db.hold.held():  # settled at this virtual instant
                    result = await engine.resolve_in_doubt(campaign, OWNER, action)  # type: ignore[arg-type]
                    await db.heard(f"recheck:{campaign}")
                assert result["resolved"] == 3
                await log.wait_for("campaign:completed", campaign)
                assert trio.current_time() - waiting_since < 5.0  # not TIMEOUT later
            nursery.cancel_scope.cancel()
    counts = await recipients.count_by_status(db, campaign)
    assert counts == ({"sent": 7, "failed": 3} if final == "failed" else {"sent": 10})
    sends = {r: gateway.sends_for(r) for r in {s.message.recipient_id for s in gateway.sends}}
    assert sorted(sends.values()) == ([1] * 10 if action == "fail" else [1] * 7 + [2] * 3)
