"""A phone number's messagesPerSecond, as the requests arriving at the gateway show it:
one budget per number (not per account row), and a change applies at once."""

from __future__ import annotations

import trio
import trio.testing

from engine.store.accounts import update_account
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings, running_engine, send_times_to_completion
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_campaign, make_contacts
from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here


def most_in_any_second(times: list[float]) -> int:
    """The most sends inside any closed window of one second."""
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] > 1.0 + 1e-6:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_two_accounts_with_one_phone_number_share_its_budget(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    log = EventLog()
    with trio.fail_after(36_000):
        first = await make_account(db, phone_number_id="PN-shared", messages_per_second=30)
        second = await make_account(db, phone_number_id="PN-shared", messages_per_second=30)
        await make_contacts(db, 60)
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, engine_settings()) as engine:
                await nursery.start(log.collect, engine)
                campaigns = [
                    await make_campaign(db, account, messages_per_minute=6_000, batch_size=20)
                    for account in (first, second)
                ]
                for campaign in campaigns:
                    await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()
    times = [send.at for send in gateway.sends]
    assert len(times) == 120
    assert most_in_any_second(times) <= 30


async def test_a_new_messages_per_second_applies_to_a_running_campaign_at_once(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    log = EventLog()
    with trio.fail_after(36_000):
        account = await make_account(db, phone_number_id="PN-patched", messages_per_second=5)
        await make_contacts(db, 120)
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, engine_settings()) as engine:
                await nursery.start(log.collect, engine)
                gateway.block_after(10)
                campaign = await make_campaign(db, account, messages_per_minute=6_000)
                await gateway.wait_held(1)
                slow_part = [send.at for send in gateway.sends[:10]]
                with db.hold.held():  # the change lands at this virtual instant
                    await update_account(db, OWNER, account, {"messages_per_second": 40})
                    await db.heard("PN-patched")
                changed_at = trio.current_time()
                gateway.release()
                await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()
    assert most_in_any_second(slow_part) <= 5
    after = [send.at for send in gateway.sends if send.at >= changed_at]
    # The next second already runs at the new rate (40/s, less the 5% margin)...
    assert sum(1 for t in after if t < changed_at + 1.0) >= 30
    # ...and never beyond it.
    assert most_in_any_second(after) <= 40


async def test_campaigns_due_together_on_a_slow_number_each_keep_their_rate(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """Four campaigns at 60 a minute fall due at the same instant on a number at 100/s:
    the number's turns for them are 10 ms apart, so the last ones' come after their
    group's horizon. Their own turns wait for the next group instead of being lost;
    lost, those campaigns would fall a turn behind each time they meet the others."""
    rates, recipients = [60.0] * 4, 10
    gateway = ScriptedGateway(latency=0.01)
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=100)
        await make_contacts(db, recipients)
        campaigns = [await make_campaign(db, account, messages_per_minute=r) for r in rates]
        sent_at = await send_times_to_completion(db, gateway, campaigns)
    for campaign in campaigns:
        times = sent_at[campaign]
        assert len(times) == recipients
        # Nine intervals of a second each, give or take the number's spacing.
        assert abs(times[-1] - times[0] - (recipients - 1)) < 0.05, times
    assert most_in_any_second([s.at for s in gateway.sends]) <= 100
