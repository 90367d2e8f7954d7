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


async def test_a_settlement_during_the_dispatchers_read_is_not_lost(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator settles the sends in doubt while the dispatcher reads how long to
    wait for them: the recheck came before its wait began, and still ends it."""
    gateway = ScriptedGateway(latency=0.01)
    settings = engine_settings(sender_concurrency="1", delivery_in_doubt_timeout=str(TIMEOUT))
    log = EventLog()
    read_oldest = recipients.next_in_doubt_since
    settled: list[float] = []

    with trio.fail_after(36_000):
        account = await make_account(db)
        await make_contacts(db, 4)
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:

                async def settle_while_read(*args: object, **kwargs: object) -> object:
                    oldest = await read_oldest(*args, **kwargs)  # type: ignore[arg-type]
                    if not settled:
                        settled.append(trio.current_time())
                        await engine.resolve_in_doubt(campaign, OWNER, "fail")
                        await db.heard(f"recheck:{campaign}")
                        await trio.testing.wait_all_tasks_blocked()  # the actor was told
                    return oldest  # as read before the settlement

                monkeypatch.setattr(recipients, "next_in_doubt_since", settle_while_read)
                await nursery.start(log.collect, engine)
                gateway.script = lost_answers(set(range(1, 10**6)))  # every answer lost
                campaign = await make_campaign(db, account, messages_per_minute=6_000)
                await log.wait_for("campaign:completed", campaign)
                completed_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert settled and completed_at - settled[0] < 5.0  # not TIMEOUT later
    assert await recipients.count_by_status(db, campaign) == {"failed": 4}
