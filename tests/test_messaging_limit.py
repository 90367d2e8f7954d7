"""WhatsApp's messaging limit: unique users per portfolio per moving 24 hours.

Campaigns of one portfolio share the limit; recipients beyond it wait `pending`
with a reason and an ETA, and the campaigns go on by themselves when the window
moves (engine/store/portfolio_reach.py, docs/delivery-guarantees.md).
"""

from __future__ import annotations

import time
from datetime import timedelta

import trio
import trio.testing

from engine.core.campaign_view import campaign_object, iso
from engine.messages import CampaignEvent
from engine.store import accounts, campaigns, portfolio_reach
from engine.store.contacts import ContactInput, upsert_contacts
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_campaign, phone
from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here

DAY = 24 * 3600.0
# A day of virtual time: leases renewed every few hours, not every few seconds.
SETTINGS = engine_settings(engine_lease_ttl_seconds="36000")


async def tagged_contacts(db: Database, numbers: range, tag: str) -> None:
    await upsert_contacts(db, OWNER, [ContactInput(phone=phone(n), tags=[tag]) for n in numbers])


def most_users_in_a_day(gateway: ScriptedGateway) -> int:
    """The most unique phones any moving 24 h of sends reached (a send exactly 24 h
    after another is outside its window: a microsecond spares float rounding)."""
    sends = sorted((s.at, s.message.to) for s in gateway.sends)
    return max(
        len({to for at, to in sends if start <= at < start + DAY - 1e-6}) for start, _ in sends
    )


async def heard_within(db: VirtualTimeDatabase, payload: str, *, seconds: float) -> None:
    """`db.heard(payload)`, bounded in real time: the virtual clock stands still while
    the test holds it, so a NOTIFY that never comes must not hang the test."""
    async with trio.open_nursery() as nursery:

        async def bound() -> None:
            await trio.to_thread.run_sync(time.sleep, seconds, abandon_on_cancel=True)
            raise AssertionError(f"{payload!r} was not heard within {seconds} s")

        nursery.start_soon(bound)
        await db.heard(payload)
        nursery.cancel_scope.cancel()


async def deferred_or_completed(log: EventLog, campaign_id: str) -> CampaignEvent:
    """The campaign's first `campaign:deferred` or its `campaign:completed`."""
    found: list[CampaignEvent] = []
    async with trio.open_nursery() as nursery:

        async def wait(name: str) -> None:
            found.append(await log.wait_for(name, campaign_id))
            nursery.cancel_scope.cancel()

        for name in ("campaign:deferred", "campaign:completed"):
            nursery.start_soon(wait, name)
    return found[0]


async def campaign_view(db: Database, campaign_id: str) -> dict[str, object]:
    row = await campaigns.campaign_row(db, campaign_id)
    assert row is not None
    return campaign_object(row)


async def test_two_campaigns_share_the_portfolio_limit_and_finish_when_the_window_moves(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    # Two numbers of one portfolio: the smallest limit set among them holds for both.
    first = await make_account(db, portfolio_id="waba-1", messaging_limit=250)
    second = await make_account(
        db, phone_number_id="PN2", portfolio_id="waba-1", messaging_limit=1000
    )
    await tagged_contacts(db, range(200), "a")
    await tagged_contacts(db, range(200, 400), "b")
    gateway = ScriptedGateway(latency=0.01)
    log = EventLog()
    with trio.fail_after(3 * DAY):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, SETTINGS) as engine:
                await nursery.start(log.collect, engine)
                started = engine.clock.now()
                ids = [
                    await make_campaign(
                        db, account, audience_type="tags", audience_config={"tags": [tag]}
                    )
                    for account, tag in ((first, "a"), (second, "b"))
                ]
                # Each campaign sent what the window allows and waits, or is done.
                ends = [await deferred_or_completed(log, c) for c in ids]
                assert len({s.message.to for s in gateway.sends}) == 250
                deferred = [e for e in ends if e.name == "campaign:deferred"]
                assert sum(e.payload["count"] for e in deferred) == 150
                for event in deferred:
                    assert event.payload["reason"] == "messaging_limit"
                    view = await campaign_view(db, event.payload["campaignId"])
                    assert view["status"] == "running"
                    assert view["deferred_count"] == event.payload["count"]
                    assert view["deferred_reason"]
                    assert view["deferred_until"] == event.payload["deferredUntil"]
                use = await portfolio_reach.window_use(db, first, now=engine.clock.now())
                assert (use.limit, use.used) == (250, 250)
                assert use.resets_at is not None
                assert timedelta(hours=24) <= use.resets_at - started < timedelta(hours=25)
                for c in ids:
                    await log.wait_for("campaign:completed", c)
                finished = engine.clock.now()
            nursery.cancel_scope.cancel()
    assert len(gateway.sends) == 400
    assert len({s.message.to for s in gateway.sends}) == 400
    assert finished - started >= timedelta(hours=24)
    assert most_users_in_a_day(gateway) <= 250
    for c in ids:
        view = await campaign_view(db, c)
        assert view["deferred_count"] == 0 and view["deferred_until"] is None


async def test_users_reached_in_the_window_do_not_count_again(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    account = await make_account(db, messaging_limit=250)
    await tagged_contacts(db, range(200), "first")
    await tagged_contacts(db, range(200, 300), "later")
    gateway = ScriptedGateway()
    log = EventLog()
    with trio.fail_after(3 * DAY):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, SETTINGS) as engine:
                await nursery.start(log.collect, engine)
                first = await make_campaign(
                    db, account, audience_type="tags", audience_config={"tags": ["first"]}
                )
                await log.wait_for("campaign:completed", first)
                # All 300: the 200 reached already pass without counting, 50 new pass.
                again = await make_campaign(db, account)
                event = await log.wait_for("campaign:deferred", again)
                assert event.payload["count"] == 50
                assert len(gateway.sends) == 200 + 250
                use = await portfolio_reach.window_use(db, account, now=engine.clock.now())
                assert use.used == 250
                await log.wait_for("campaign:completed", again)
            nursery.cancel_scope.cancel()
    assert len(gateway.sends) == 500
    assert most_users_in_a_day(gateway) <= 250


async def test_an_account_without_a_limit_is_not_held_back(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    account = await make_account(db)
    await tagged_contacts(db, range(300), "all")
    gateway = ScriptedGateway()
    log = EventLog()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, SETTINGS) as engine:
                await nursery.start(log.collect, engine)
                # The clock stands still until the supervisor heard of the campaign: the
                # NOTIFY travels outside any operation, and the nearest deadline while it
                # is on its way is this test's own bound.
                with db.hold.held():
                    campaign = await make_campaign(db, account)
                    await heard_within(db, f"start:{campaign}", seconds=10)
                await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()
    assert len(gateway.sends) == 300
    assert not log.of(campaign, "campaign:deferred")
    assert await db.fetchval("SELECT count(*) FROM portfolio_reach") == 0


async def test_a_raised_limit_sends_the_waiting_recipients_at_once(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    account = await make_account(db, messaging_limit=50)
    await tagged_contacts(db, range(100), "all")
    gateway = ScriptedGateway()
    log = EventLog()
    with trio.fail_after(3 * DAY):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, SETTINGS) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(db, account)
                event = await log.wait_for("campaign:deferred", campaign)
                assert event.payload["count"] == 50 and len(gateway.sends) == 50
                deferred_at = engine.clock.now()
                # The clock stands still until the campaign's owner heard of it.
                with db.hold.held():
                    await accounts.update_account(db, OWNER, account, {"messaging_limit": 200})
                    await heard_within(db, f"recheck:{campaign}", seconds=10)
                await log.wait_for("campaign:completed", campaign)
                finished = engine.clock.now()
            nursery.cancel_scope.cancel()
    assert len(gateway.sends) == 100
    assert finished - deferred_at < timedelta(minutes=1)  # not a day later


async def test_recipients_wait_for_the_expiry_that_makes_room_for_them(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    account = await make_account(db, messaging_limit=250)
    await tagged_contacts(db, range(600), "all")
    gateway = ScriptedGateway()
    log = EventLog()
    with trio.fail_after(4 * DAY):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, SETTINGS) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(db, account)
                event = await log.wait_for("campaign:deferred", campaign)
                assert event.payload["count"] == 350
                waits = [
                    r["not_before"]
                    for r in await db.fetch(
                        "SELECT not_before FROM campaign_recipients"
                        " WHERE deferred_reason = 'messaging_limit' ORDER BY id"
                    )
                ]
                # Staggered by the reaches' expiries in send order, not all at the first.
                assert waits == sorted(waits) and len(set(waits)) > 2
                assert iso(waits[0]) == event.payload["deferredUntil"]
                await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()
    assert len(gateway.sends) == 600
    assert most_users_in_a_day(gateway) <= 250
    moments = sorted(s.at for s in gateway.sends)
    assert moments[-1] - moments[0] >= 2 * DAY  # three windows: 250, 250, 100
