"""One WhatsApp account's budget and errors, as the campaigns sending through it see them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from engine.gateway import OutgoingMessage, SendResult
from engine.service.engine import Engine
from engine.settings import Settings
from engine.store import recipients
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_campaign, make_contacts, phone
from tests.virtual_time import virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here


@asynccontextmanager
async def engine_and_events(
    db: Database, gateway: ScriptedGateway, settings: Settings | None = None
) -> AsyncIterator[tuple[Engine, EventLog]]:
    log = EventLog()
    async with trio.open_nursery() as nursery:
        async with running_engine(db, gateway, settings or engine_settings()) as engine:
            await nursery.start(log.collect, engine)
            yield engine, log
        nursery.cancel_scope.cancel()


async def recipient(db: Database, campaign: str, n: int) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT id, status, attempts, error_code FROM campaign_recipients "
        "WHERE campaign_id = $1 AND phone = $2",
        campaign,
        phone(n),
    )
    assert row is not None
    return dict(row)


async def test_campaigns_sharing_an_account_never_exceed_its_messages_per_second(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=20)
        await make_contacts(db, 40)
        async with engine_and_events(db, gateway) as (_engine, log):
            # 3 x 600/min = 30/s wanted through a 20/s account.
            campaigns = [
                await make_campaign(db, account, messages_per_minute=600, batch_size=10)
                for _ in range(3)
            ]
            for campaign in campaigns:
                await log.wait_for("campaign:completed", campaign)

    times = sorted(send.at for send in gateway.sends)
    assert len(times) == 120
    # Half-open windows [t, t + 1 s); the bucket's timing tolerance is 1 µs.
    most_in_a_second = max(
        sum(1 for u in times[i:] if u < t + 1.0 - 1e-5) for i, t in enumerate(times)
    )
    assert most_in_a_second == 20  # the budget is used, and never exceeded
    for campaign in campaigns:
        assert await recipients.count_by_status(db, campaign) == {"sent": 40}
    assert all(gateway.sends_for(send.message.recipient_id) == 1 for send in gateway.sends)


async def test_130429_stops_the_account_for_the_slowdown_then_retries(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    throttled: list[int] = []

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        if not throttled:
            throttled.append(message.recipient_id)
            return SendResult(ok=False, http_status=429, error_code=130429, error_message="Rate")
        return None

    latency, slowdown = 0.01, 5.0
    gateway = ScriptedGateway(script, latency=latency)
    settings = engine_settings(sender_throttle_slowdown_seconds=str(slowdown))
    with trio.fail_after(36_000):
        account = await make_account(db)
        await make_contacts(db, 10)
        async with engine_and_events(db, gateway, settings) as (_engine, log):
            campaign = await make_campaign(db, account, messages_per_minute=600)
            completed = await log.wait_for("campaign:completed", campaign)

    first, *later = gateway.sends
    assert first.message.recipient_id == throttled[0]
    # The 429 answered at first.at + latency; nothing went out for `slowdown` after it.
    quiet_until = first.at + latency + slowdown
    assert all(send.at >= quiet_until - 1e-9 for send in later)
    assert min(send.at for send in later) < quiet_until + 0.2  # and then it resumed
    row = await db.fetchrow(
        "SELECT status, attempts FROM campaign_recipients WHERE id = $1", throttled[0]
    )
    assert row is not None and (row["status"], row["attempts"]) == ("sent", 2)
    assert gateway.sends_for(throttled[0]) == 2
    assert await recipients.count_by_status(db, campaign) == {"sent": 10}
    assert completed.payload["campaign"]["stats"]["sent"] == 10


async def test_131026_fails_only_that_recipient(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    undeliverable = phone(3)

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        if message.to == undeliverable:
            return SendResult(
                ok=False, http_status=400, error_code=131026, error_message="Undeliverable"
            )
        return None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        account = await make_account(db)
        await make_contacts(db, 10)
        async with engine_and_events(db, gateway) as (_engine, log):
            campaign = await make_campaign(db, account, messages_per_minute=600)
            completed = await log.wait_for("campaign:completed", campaign)

    failed = await recipient(db, campaign, 3)
    assert (failed["status"], failed["attempts"], failed["error_code"]) == ("failed", 1, "131026")
    assert gateway.sends_for(failed["id"]) == 1  # permanent: never retried
    assert await recipients.count_by_status(db, campaign) == {"sent": 9, "failed": 1}
    stats = completed.payload["campaign"]["stats"]
    assert (stats["sent"], stats["failed"]) == (9, 1)


async def test_190_pauses_the_campaign_with_a_reason_and_keeps_the_recipient(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    refused = phone(4)

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        if message.to == refused and attempt == 1:
            return SendResult(
                ok=False, http_status=401, error_code=190, error_message="Invalid OAuth token"
            )
        return None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        account = await make_account(db)
        await make_contacts(db, 20)
        async with engine_and_events(db, gateway) as (engine, log):
            campaign = await make_campaign(db, account, messages_per_minute=600)
            paused = await log.wait_for("campaign:paused", campaign)
            assert "190" in paused.payload["reason"]
            assert "token" in paused.payload["reason"]
            state = await engine.campaign(campaign, OWNER)
            assert state["status"] == "paused"
            back = await recipient(db, campaign, 4)
            assert (back["status"], back["attempts"], back["error_code"]) == ("pending", 1, "190")
            sends_when_paused = len(gateway.sends)
            await trio.sleep(60)
            assert len(gateway.sends) == sends_when_paused  # it really stopped
            assert (await recipients.count_by_status(db, campaign)).get("sending") is None

            # Once the operator fixed the token, resuming sends it (and nobody twice).
            await engine.resume(campaign, OWNER)
            await log.wait_for("campaign:completed", campaign)

    assert (await recipient(db, campaign, 4))["status"] == "sent"
    assert gateway.sends_for(back["id"]) == 2
    assert await recipients.count_by_status(db, campaign) == {"sent": 20}
    others = {s.message.recipient_id for s in gateway.sends if s.message.to != refused}
    assert len(others) == 19 and all(gateway.sends_for(r) == 1 for r in others)


async def test_disconnected_account_fails_the_campaign(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    with trio.fail_after(36_000):
        account = await make_account(db, status="disconnected")
        await make_contacts(db, 5)
        async with engine_and_events(db, gateway) as (engine, log):
            campaign = await make_campaign(db, account)
            failed = await log.wait_for("campaign:failed", campaign)
            state = await engine.campaign(campaign, OWNER)

    assert failed.payload["error"] == "WhatsApp account is not connected"
    assert (state["status"], state["error"]) == ("failed", "WhatsApp account is not connected")
    assert gateway.sends == []
    assert await recipients.count_by_status(db, campaign) == {"pending": 5}
    assert "campaign:completed" not in log.names(campaign)
