"""Pause, resume and cancel at arbitrary points never skip or repeat a recipient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import trio
import trio.testing
import trio_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.service.engine import Engine
from engine.store import recipients
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_campaign, make_contacts
from tests.virtual_time import open_virtual_time_database

RECIPIENTS = 120
CONCURRENCY = 5
# Marked ahead of a free sender (sender.prefetch, at most the concurrency): they are
# `sending` when a pause is answered and may still start (docs/delivery-guarantees.md).
PREFETCH = 2
Then = Literal["resume", "cancel_while_paused", "cancel_after_resume"]


@asynccontextmanager
async def engine_and_events(
    db: Database, gateway: ScriptedGateway
) -> AsyncIterator[tuple[Engine, EventLog]]:
    log = EventLog()
    async with trio.open_nursery() as nursery:
        config = engine_settings(sender_concurrency=str(CONCURRENCY), sender_prefetch=str(PREFETCH))
        async with running_engine(db, gateway, config) as engine:
            await nursery.start(log.collect, engine)
            yield engine, log
        nursery.cancel_scope.cancel()


async def ids_with_status(db: Database, campaign: str, status: str) -> set[int]:
    rows = await db.fetch(
        "SELECT id FROM campaign_recipients WHERE campaign_id = $1 AND status = $2",
        campaign,
        status,
    )
    return {r["id"] for r in rows}


async def stop_with_sends_in_flight(
    engine: Engine, gateway: ScriptedGateway, campaign: str, command: Literal["pause", "cancel"]
) -> tuple[int, set[int]]:
    """Pause or cancel while sends are held in flight, then let them answer.

    Returns how many sends had started when the command returned, and the
    recipients `sending` at that moment: the only ones that may still start."""
    await gateway.wait_held(1)
    if command == "pause":
        await engine.pause(campaign, OWNER)
    else:
        await engine.cancel(campaign, OWNER)
    started = len(gateway.sends)
    in_flight = await ids_with_status(engine.db, campaign, "sending")
    gateway.release()
    return started, in_flight


def assert_only_in_flight_started(
    gateway: ScriptedGateway, started: int, in_flight: set[int]
) -> None:
    assert len(in_flight) <= CONCURRENCY + PREFETCH
    assert {s.message.recipient_id for s in gateway.sends[started:]} <= in_flight
    assert len(gateway.sends) - started <= CONCURRENCY + PREFETCH


async def assert_no_send_for_a_while(gateway: ScriptedGateway) -> None:
    """A minute of virtual time in which the engine could misbehave, and does not."""
    sends = len(gateway.sends)
    await trio.sleep(60)
    assert len(gateway.sends) == sends


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pause_after=st.integers(0, 100),
    then=st.sampled_from(["resume", "cancel_while_paused", "cancel_after_resume"]),
    sends_after_resume=st.integers(0, 10),
)
async def test_pause_resume_cancel_neither_skip_nor_repeat(
    database_url: str,
    autojump_clock: trio.testing.MockClock,
    pause_after: int,
    then: Then,
    sends_after_resume: int,
) -> None:
    # pytest-trio sets async fixtures up once for all examples, but each example is
    # a trio.run of its own: open the loop and the pool here. Examples share the
    # database; each has its own account and campaign.
    async with (
        trio_asyncio.open_loop(),
        open_virtual_time_database(database_url, autojump_clock) as db,
    ):
        await run_example(db, pause_after, then, sends_after_resume)


async def run_example(db: Database, pause_after: int, then: Then, sends_after_resume: int) -> None:
    gateway = ScriptedGateway(latency=0.01)
    gateway.block_after(pause_after)
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=1_000)
        await make_contacts(db, RECIPIENTS)
        async with engine_and_events(db, gateway) as (engine, log):
            campaign = await make_campaign(db, account, messages_per_minute=6_000, batch_size=25)

            # Pause with sends in flight.
            started, in_flight = await stop_with_sends_in_flight(engine, gateway, campaign, "pause")
            paused = await log.wait_for("campaign:paused", campaign)
            assert_only_in_flight_started(gateway, started, in_flight)
            sent_while_running = len(gateway.sends)
            assert paused.payload["processedCount"] == sent_while_running
            assert await recipients.count_by_status(db, campaign) == {
                "sent": sent_while_running,
                "pending": RECIPIENTS - sent_while_running,
            }
            await assert_no_send_for_a_while(gateway)

            if then == "cancel_while_paused":
                await engine.cancel(campaign, OWNER)
                await log.wait_for("campaign:cancelled", campaign)
            else:
                if then == "cancel_after_resume":
                    gateway.block_after(sends_after_resume)
                await engine.resume(campaign, OWNER)
                await log.wait_for("campaign:resumed", campaign)
                if then == "cancel_after_resume":
                    started, in_flight = await stop_with_sends_in_flight(
                        engine, gateway, campaign, "cancel"
                    )
                    await log.wait_for("campaign:cancelled", campaign)
                    assert_only_in_flight_started(gateway, started, in_flight)
                else:
                    completed = await log.wait_for("campaign:completed", campaign)
            if then != "resume":
                await assert_no_send_for_a_while(gateway)
            state = await engine.campaign(campaign, OWNER)

    names = log.names(campaign)
    final = "campaign:completed" if then == "resume" else "campaign:cancelled"
    assert names.count("campaign:paused") == 1 and names.count(final) == 1
    assert names.index("campaign:paused") < names.index(final)
    if then != "cancel_while_paused":
        assert names.index("campaign:paused") < names.index("campaign:resumed")
        assert names.index("campaign:resumed") < names.index(final)

    # Nobody twice.
    sent_to = {s.message.recipient_id for s in gateway.sends}
    assert len(sent_to) == len(gateway.sends)
    assert await ids_with_status(db, campaign, "sent") == sent_to
    counts = await recipients.count_by_status(db, campaign)
    if then == "resume":
        # Nobody skipped.
        assert counts == {"sent": RECIPIENTS}
        stats = completed.payload["campaign"]["stats"]
        assert stats["sent"] + stats["failed"] == RECIPIENTS == state["total_recipients"]
        assert state["status"] == "completed"
    else:
        # The unsent stay pending.
        assert counts == {"sent": len(sent_to), "pending": RECIPIENTS - len(sent_to)}
        assert state["status"] == "cancelled"
