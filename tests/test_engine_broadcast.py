"""What watching a campaign and editing its rate do to its sending, on virtual time."""

from __future__ import annotations

from itertools import pairwise

import pytest
import trio
import trio.testing

from engine.gateway import OutgoingMessage, SendResult
from engine.messages import CampaignEvent, Lagged, StatusUpdate
from engine.service.engine import Engine
from tests.engine_helpers import EventLog, change_rate, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import make_account, make_campaign, make_contacts
from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here


RECIPIENTS = 60
PER_MINUTE = 600
INTERVAL = 60 / PER_MINUTE


async def send_and_time(
    db: VirtualTimeDatabase, engine: Engine, log: EventLog, gateway: ScriptedGateway, account: str
) -> tuple[str, float]:
    """Run one campaign; returns it and its virtual duration, first send to `completed`."""
    already = len(gateway.sends)
    campaign = await make_campaign(db, account, messages_per_minute=PER_MINUTE)
    await log.wait_for("campaign:completed", campaign)
    return campaign, trio.current_time() - gateway.sends[already].at


async def test_a_slow_subscriber_does_not_slow_a_campaign_and_learns_it_lagged(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    # An event per recipient and then some: plenty for a one-slot queue to overflow.
    settings = engine_settings(engine_progress_every="1", engine_stats_every="1")
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=1_000)
        await make_contacts(db, RECIPIENTS)
        log = EventLog()
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:
                await nursery.start(log.collect, engine)
                _, unwatched = await send_and_time(db, engine, log, gateway, account)

                async with engine.broadcaster.subscribe(max_queue=1) as slow:
                    watched_campaign, watched = await send_and_time(
                        db, engine, log, gateway, account
                    )
                    published = len(log.of(watched_campaign))
                    assert published > 2 * RECIPIENTS

                    # Finally it reads: the one event it had room for...
                    first = await slow.receive()
                    assert isinstance(first, CampaignEvent)
                    assert first.name == "campaign:started"
                    # ...and, with the next event (a delivery receipt), what it missed.
                    recipient_id = gateway.sends[-1].message.recipient_id
                    engine.submit_status_updates(
                        [StatusUpdate(recipient_id, None, "delivered", engine.clock.now())]
                    )
                    lagged = await slow.receive()
                    assert isinstance(lagged, Lagged)
                    assert lagged.dropped == published - 1
                    after = await slow.receive()
                    assert isinstance(after, CampaignEvent) and after.name == "campaign:stats"
            nursery.cancel_scope.cancel()

    # Paced by the token bucket alone: (n - 1) intervals, plus the last answer.
    assert (RECIPIENTS - 1) * INTERVAL <= unwatched <= RECIPIENTS * INTERVAL
    assert abs(watched - unwatched) <= INTERVAL


async def test_a_rate_change_applies_from_the_next_token(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    slow_per_minute, fast_per_minute = 60, 600
    answered_five = trio.Event()

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        if len(gateway.sends) >= 5:
            answered_five.set()
        return None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=1_000)
        await make_contacts(db, 20)
        log = EventLog()
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(db, account, messages_per_minute=slow_per_minute)
                await answered_five.wait()
                await change_rate(db, engine, campaign, fast_per_minute)
                changed_at = trio.current_time()
                await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()

    times = [send.at for send in gateway.sends]
    assert len(times) == 20
    before = [t for t in times if t < changed_at]
    after = [t for t in times if t >= changed_at]
    assert len(before) == 5
    for earlier, later in pairwise(before):
        assert later - earlier == pytest.approx(60 / slow_per_minute, abs=1e-6)
    # The next token does not wait out the old interval: what accrued so far counts,
    # the rest accrues at the new rate.
    assert after[0] - changed_at <= 60 / fast_per_minute + 1e-6
    assert after[0] - before[-1] < 60 / slow_per_minute
    for earlier, later in pairwise(after):
        assert later - earlier == pytest.approx(60 / fast_per_minute, abs=1e-6)
