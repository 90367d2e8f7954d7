"""A daemon dies mid-campaign with requests in flight; another one takes the campaign over."""

from __future__ import annotations

from datetime import timedelta

import trio
import trio.testing

from engine.messages import StatusUpdate
from engine.store import recipients
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import make_account, make_campaign, make_contacts
from tests.virtual_time import virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here


RECIPIENTS = 80
SENT_BEFORE_CRASH = 30
CONCURRENCY = 5
IN_DOUBT_TIMEOUT = 60.0


async def statuses(db: Database, campaign: str) -> dict[int, str]:
    rows = await db.fetch(
        "SELECT id, status FROM campaign_recipients WHERE campaign_id = $1", campaign
    )
    return {r["id"]: r["status"] for r in rows}


async def test_takeover_after_a_crash_neither_repeats_nor_skips_and_resolves_what_is_in_doubt(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    settings = engine_settings(
        sender_concurrency=str(CONCURRENCY),
        engine_lease_ttl_seconds="5",
        delivery_in_doubt_timeout=str(IN_DOUBT_TIMEOUT),
    )
    with trio.fail_after(36_000):
        account = await make_account(db)
        await make_contacts(db, RECIPIENTS)

        # Daemon A: 30 requests answered, then every sender stuck in a request.
        gateway_a = ScriptedGateway(latency=0.01)
        gateway_a.block_after(SENT_BEFORE_CRASH)
        with trio.CancelScope() as crash:
            async with running_engine(db, gateway_a, settings, instance_id="daemon-a"):
                campaign = await make_campaign(
                    db, account, messages_per_minute=6_000, batch_size=20
                )
                await gateway_a.wait_held(CONCURRENCY)
                crash.cancel()
                await trio.sleep_forever()

        before = await statuses(db, campaign)
        in_flight = {r for r, status in before.items() if status == "sending"}
        sent_by_a = {r for r, status in before.items() if status == "sent"}
        # Only the requests in flight are unresolved: every answered one was stored,
        # and nothing read but not dispatched was left `sending`.
        assert len(in_flight) == CONCURRENCY
        assert len(sent_by_a) == SENT_BEFORE_CRASH
        assert {s.message.recipient_id for s in gateway_a.sends} == in_flight | sent_by_a
        assert (await db.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign)) == (
            "running"
        )

        # Daemon B, on the same database; A's lease may or may not have been released.
        gateway_b = ScriptedGateway(latency=0.01)
        gateway_b.block_after(0)
        log = EventLog()
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway_b, settings, instance_id="daemon-b") as engine:
                await nursery.start(log.collect, engine)
                await gateway_b.wait_held(1)  # B owns the campaign and sends again
                after_takeover = await statuses(db, campaign)
                in_doubt = {r for r, s in after_takeover.items() if s == "in_doubt"}
                assert in_doubt == in_flight
                # A delivery receipt for one of them arrives before the timeout.
                delivered = min(in_doubt)
                engine.submit_status_updates(
                    [StatusUpdate(delivered, None, "delivered", engine.clock.now())]
                )
                gateway_b.release()
                completed = await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()

    final = await statuses(db, campaign)
    unknown = in_doubt - {delivered}
    assert final[delivered] == "delivered"
    assert {r for r, s in final.items() if s == "failed"} == unknown
    assert await recipients.count_by_status(db, campaign) == {
        "sent": RECIPIENTS - CONCURRENCY,
        "delivered": 1,
        "failed": CONCURRENCY - 1,
    }
    # In doubt: never sent again. Everything else: sent exactly once, across both daemons.
    for r in final:
        total = gateway_a.sends_for(r) + gateway_b.sends_for(r)
        assert total == 1, (r, gateway_a.sends_for(r), gateway_b.sends_for(r))
    assert not any(gateway_b.sends_for(r) for r in in_doubt)
    rows = await db.fetch(
        "SELECT error_code, failed_at - sending_at AS waited FROM campaign_recipients "
        "WHERE id = ANY($1::bigint[])",
        list(unknown),
    )
    assert {r["error_code"] for r in rows} == {"outcome_unknown"}
    assert all(r["waited"] >= timedelta(seconds=IN_DOUBT_TIMEOUT) for r in rows)

    stats = completed.payload["campaign"]["stats"]
    assert (stats["sent"], stats["delivered"], stats["failed"], stats["in_doubt"]) == (
        RECIPIENTS - CONCURRENCY + 1,
        1,
        CONCURRENCY - 1,
        0,
    )
    assert stats["pending"] == 0
    assert completed.payload["campaign"]["status"] == "completed"
