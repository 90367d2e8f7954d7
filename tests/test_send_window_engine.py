"""Send windows in the engine, on virtual time: recipients outside their local hours
wait `pending` and go when their window opens, through the campaign's pace.

The wall clock starts on the evening of 28 March 2026, the night Berlin moves to
summer time (09:00 CEST on the 29th is 07:00 UTC, not 08:00); New York is already
on EDT (09:00 is 13:00 UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio
import trio.testing

from engine.clock import WallClock
from engine.core.campaign_view import campaign_object
from engine.service.engine import open_engine
from engine.store import campaigns, recipients
from engine.store.contacts import ContactInput, upsert_contacts
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_campaign, phone
from tests.virtual_time import virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here

EVENING_BEFORE_DST = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)
BERLIN_OPENS = datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
NEW_YORK_OPENS = datetime(2026, 3, 29, 13, 0, tzinfo=UTC)
PER_SECOND = 10


class WallClockFrom(WallClock):
    """A wall clock that reads `start` when the engine opens."""

    def __init__(self, start: datetime) -> None:
        super().__init__()
        self._wall_at_start = start.timestamp()


async def contacts_in(db: Database, numbers: range, timezone: str | None) -> None:
    attributes = {"timezone": timezone} if timezone else {}
    await upsert_contacts(
        db,
        OWNER,
        [ContactInput(phone=phone(n), first_name="Ana", attributes=attributes) for n in numbers],
    )


async def test_recipients_wait_for_their_local_window_and_go_at_the_campaign_pace(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    account = await make_account(db)
    await contacts_in(db, range(100), "Europe/Berlin")
    await contacts_in(db, range(100, 200), "America/New_York")
    await contacts_in(db, range(200, 210), "Nowhere/Land")  # falls back to the campaign's
    await contacts_in(db, range(210, 220), None)
    gateway = ScriptedGateway()
    log = EventLog()
    clock = WallClockFrom(EVENING_BEFORE_DST)
    settings = engine_settings(engine_lease_ttl_seconds="36000")
    with trio.fail_after(2 * 86_400):
        async with trio.open_nursery() as nursery:
            async with open_engine(
                db, settings, gateway, instance_id="window-test", clock=clock
            ) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(
                    db, account, schedule_type="manual", messages_per_minute=60 * PER_SECOND
                )
                await db.execute(
                    "UPDATE campaigns SET send_window = $2 WHERE id = $1",
                    campaign,
                    {"start": "09:00", "end": "10:00", "timezone": "Europe/Berlin"},
                )
                await engine.start(campaign, OWNER)
                event = await log.wait_for("campaign:deferred", campaign)
                assert event.payload["reason"] == "send_window"
                assert event.payload["count"] == 220
                assert event.payload["deferredUntil"] == "2026-03-29T07:00:00.000Z"
                row = await campaigns.campaign_row(db, campaign)
                view = campaign_object(row)
                assert view["status"] == "running"
                assert view["waiting_for_window"] is True
                assert view["next_window_opens_at"] == "2026-03-29T07:00:00.000Z"
                assert view["send_window"]["timezone"] == "Europe/Berlin"
                assert not gateway.sends
                await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()

    def wall(at: float) -> datetime:
        return clock.now() + timedelta(seconds=at - trio.current_time())

    sent_at = {s.message.to: wall(s.at) for s in gateway.sends}
    assert len(gateway.sends) == 220
    berlin = [sent_at[phone(n)] for n in (*range(100), *range(200, 220))]
    new_york = [sent_at[phone(n)] for n in range(100, 200)]
    # Each group from its opening, paced: 120 at 10/s take 12 s, inside the hour.
    assert BERLIN_OPENS <= min(berlin) < BERLIN_OPENS + timedelta(seconds=1)
    assert max(berlin) < BERLIN_OPENS + timedelta(seconds=15)
    assert NEW_YORK_OPENS <= min(new_york) < NEW_YORK_OPENS + timedelta(seconds=1)
    assert max(new_york) < NEW_YORK_OPENS + timedelta(seconds=12)
    # Many windows opening at once do not burst: at most rate + 1 in any second.
    moments = sorted(s.at for s in gateway.sends)
    for i, start in enumerate(moments):
        within = [m for m in moments[i:] if m < start + 1.0]
        assert len(within) <= PER_SECOND + 1


async def test_a_new_window_times_the_waiting_recipients_again(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    account = await make_account(db)
    await contacts_in(db, range(3), None)
    campaign = await make_campaign(db, account, schedule_type="manual")
    await recipients.materialise_recipients(db, campaign)
    ids = [r["id"] for r in await db.fetch("SELECT id FROM campaign_recipients")]
    await recipients.defer(db, ids, [NEW_YORK_OPENS] * 3, reason="send_window")
    await campaigns.update_campaign(
        db, OWNER, campaign, lambda _row: {"send_window": {"start": "08:00", "end": "09:00"}}
    )
    waiting = await db.fetchval(
        "SELECT count(*) FROM campaign_recipients WHERE not_before IS NOT NULL"
        " OR deferred_reason IS NOT NULL"
    )
    assert waiting == 0
