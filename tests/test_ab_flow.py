"""A/B variants end to end on the mock clock: each recipient gets its variant's
message, counts per variant, and the sample-then-winner flow across a crash."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import trio
import trio.testing

from engine.clock import WallClock
from engine.core import ab_split
from engine.core.ab_winner import Decision
from engine.messages import StatusUpdate
from engine.service.engine import Engine, open_engine
from engine.settings import Settings
from engine.store import variants
from engine.store.campaigns import CampaignInput, create_campaign
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_contacts, utc_now
from tests.virtual_time import virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here

VARIANTS = [
    {"name": "Short", "messageContent": "Hi {{firstName}}", "weight": 1},
    {"name": "Long", "messageContent": "Hello {{firstName}}, we have news", "weight": 3},
]


@asynccontextmanager
async def engine_with_events(
    db: Database,
    gateway: ScriptedGateway,
    *,
    clock: WallClock | None = None,
    settings: Settings | None = None,
) -> AsyncIterator[tuple[Engine, EventLog]]:
    log = EventLog()
    async with (
        trio.open_nursery() as nursery,
        open_engine(
            db,
            settings or engine_settings(),
            gateway,
            instance_id=f"test-{uuid.uuid4()}",
            clock=clock,
        ) as engine,
    ):
        await nursery.start(log.collect, engine)
        yield engine, log
        nursery.cancel_scope.cancel()


async def create(db: Database, account: str, ab_test: dict[str, Any] | None = None) -> str:
    row = await create_campaign(
        db,
        OWNER,
        CampaignInput(
            account_id=account,
            name="AB",
            message_type="text",
            message_content="Hi {{firstName}}",
            audience_type="all",
            audience_config={},
            schedule_type="now",
            throttle_config={"messagesPerMinute": 6000, "batchSize": 25},
            variants=VARIANTS,
            ab_test=ab_test,
        ),
        now=utc_now(),
    )
    return str(row["id"])


async def recipients_of(db: Database, campaign: str) -> dict[int, dict[str, Any]]:
    rows = await db.fetch(
        """SELECT id, contact_id, variant, variables, status FROM campaign_recipients
           WHERE campaign_id = $1""",
        campaign,
    )
    return {r["id"]: dict(r) for r in rows}


def body_for(variant: int, first_name: str) -> str:
    return str(VARIANTS[variant]["messageContent"]).replace("{{firstName}}", first_name)


async def test_each_recipient_gets_its_variant_and_counts_are_per_variant(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        account = await make_account(db)
        await make_contacts(db, 80)
        gateway = ScriptedGateway(latency=0.01)
        async with engine_with_events(db, gateway) as (engine, log):
            campaign = await create(db, account)
            await log.wait_for("campaign:completed", campaign)
            rows = await recipients_of(db, campaign)
            # A webhook: the first recipient of each variant is delivered and read.
            firsts = {r["variant"]: i for i, r in sorted(rows.items(), reverse=True)}
            stats_events = len(log.of(campaign, "campaign:stats"))
            now = engine.clock.now()
            reads = [StatusUpdate(i, None, "read", now) for i in firsts.values()]
            engine.submit_status_updates(reads)
            await log.wait_for("campaign:stats", campaign, count=stats_events + 1)
            detail = await engine.campaign(campaign, OWNER)
            completed = log.of(campaign, "campaign:completed")[0].payload["campaign"]

    assert len(gateway.sends) == 80
    for send in gateway.sends:
        row = rows[send.message.recipient_id]
        expected = ab_split.variant_of(campaign, str(row["contact_id"]), [1, 3])
        assert row["variant"] == expected
        assert send.message.payload["body"] == body_for(expected, row["variables"]["firstName"])
    sizes = [sum(r["variant"] == v for r in rows.values()) for v in (0, 1)]
    assert 0 < sizes[0] < sizes[1]
    shown = detail["variants"]
    assert [v["name"] for v in shown] == ["Short", "Long"]
    assert [v["weight"] for v in shown] == [1, 3]
    assert [v["recipients"] for v in shown] == sizes
    assert [v["stats"]["sent"] for v in shown] == sizes
    assert [v["stats"]["read"] for v in shown] == [1, 1]
    assert [v["metrics"]["read_rate"] for v in shown] == [100.0, 100.0]
    assert [v["metrics"]["delivery_rate"] for v in shown] == [
        round(100 / sizes[0], 2),
        round(100 / sizes[1], 2),
    ]
    assert detail["ab_test"] is None
    # The campaign:completed object counts per variant too (before the webhook).
    assert [v["stats"]["sent"] for v in completed["variants"]] == sizes


AB_TEST = {"sampleShare": 0.4, "metric": "read_rate", "decideAfterMinutes": 2}


def iso_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_sample_goes_first_then_the_winner_to_the_rest_across_a_crash(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    """Daemon A sends the sample and dies while waiting; B, on the same clock, decides
    at the stored time (not a new wait) with the reads that came in, and sends the
    rest with the winner, each recipient exactly once."""
    clock = WallClock()
    settings = engine_settings()
    with trio.fail_after(7200):
        account = await make_account(db)
        await make_contacts(db, 100)
        gateway_a = ScriptedGateway(latency=0.01)
        with trio.CancelScope() as crash:
            async with engine_with_events(db, gateway_a, clock=clock, settings=settings) as (
                engine,
                log,
            ):
                campaign = await create(db, account, AB_TEST)
                sampled = await log.wait_for("campaign:sample_sent", campaign)
                rows = await recipients_of(db, campaign)
                sample = {i: r for i, r in rows.items() if r["variant"] is not None}
                assert sampled.payload["sampleSize"] == len(sample)
                assert {s.message.recipient_id for s in gateway_a.sends} == set(sample)
                assert all(r["status"] == "pending" for i, r in rows.items() if i not in sample)
                waiting = await engine.campaign(campaign, OWNER)
                assert waiting["ab_test"]["phase"] == "waiting"
                assert waiting["ab_test"]["decide_at"] == sampled.payload["decideAt"]
                # "Short" (variant 0) is read by all its sample, "Long" by one.
                now = engine.clock.now()
                short = [i for i, r in sample.items() if r["variant"] == 0]
                long = [i for i, r in sample.items() if r["variant"] == 1]
                assert short and len(long) > 1
                reads = [StatusUpdate(i, None, "delivered", now) for i in sample]
                reads += [StatusUpdate(i, None, "read", now) for i in [*short, long[0]]]
                stats_events = len(log.of(campaign, "campaign:stats"))
                engine.submit_status_updates(reads)
                await log.wait_for("campaign:stats", campaign, count=stats_events + 1)
                await trio.sleep(60)  # half the wait, then the daemon dies
                crash.cancel()
                await trio.sleep_forever()
        assert not log.of(campaign, "campaign:variant_chosen")

        gateway_b = ScriptedGateway(latency=0.01)
        async with engine_with_events(db, gateway_b, clock=clock, settings=settings) as (
            engine,
            log,
        ):
            chosen = await log.wait_for("campaign:variant_chosen", campaign)
            await log.wait_for("campaign:completed", campaign)
            detail = await engine.campaign(campaign, OWNER)

    payload = chosen.payload
    assert payload["variant"] == "Short" and payload["variantIndex"] == 0
    assert payload["metric"] == "read_rate"
    assert payload["values"] == {"Short": 100.0, "Long": round(100 / len(long), 2)}
    decided_at = iso_time(payload["decidedAt"])
    assert abs(decided_at - iso_time(sampled.payload["decideAt"])) < timedelta(seconds=2)
    # B sent only the rest, all with the winner's message; nobody got two messages.
    rest = set(rows) - set(sample)
    assert {s.message.recipient_id for s in gateway_b.sends} == rest
    for send in gateway_b.sends:
        first_name = rows[send.message.recipient_id]["variables"]["firstName"]
        assert send.message.payload["body"] == body_for(0, first_name)
    final = await recipients_of(db, campaign)
    assert all(final[i]["variant"] == 0 for i in rest)
    test = detail["ab_test"]
    assert test["phase"] == "decided" and test["winner"] == "Short"
    assert test["decided_at"] == payload["decidedAt"]
    assert test["sample_size"] == len(sample)
    assert [v["recipients"] for v in detail["variants"]] == [len(short) + len(rest), len(long)]
    assert detail["status"] == "completed" and detail["stats"]["sent"] == 100


async def test_a_stored_decision_is_never_made_again(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        account = await make_account(db)
        await make_contacts(db, 20)
        campaign = await create(db, account, AB_TEST)
        first = await variants.decide_winner(
            db, campaign, lambda _: Decision(1, (0.0, 50.0)), now=utc_now()
        )
        again = await variants.decide_winner(
            db, campaign, lambda _: Decision(0, (90.0, 0.0)), now=utc_now()
        )
        assert first.now and not again.now
        assert (again.winner, again.values, again.decided_at) == (
            1,
            [0.0, 50.0],
            first.decided_at,
        )
        rows = await recipients_of(db, campaign)
        held = await db.fetchval(
            """SELECT count(*) FROM campaign_recipients
               WHERE campaign_id = $1 AND not_before IS NOT NULL""",
            campaign,
        )
        assert held == 0 and all(r["variant"] is not None for r in rows.values())


async def test_a_pause_holds_the_decision_until_the_campaign_is_resumed(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(3600):
        account = await make_account(db)
        await make_contacts(db, 40)
        gateway = ScriptedGateway(latency=0.01)
        async with engine_with_events(db, gateway) as (engine, log):
            campaign = await create(db, account, AB_TEST)
            sampled = await log.wait_for("campaign:sample_sent", campaign)
            sample_sends = len(gateway.sends)
            await engine.pause(campaign, OWNER)
            await log.wait_for("campaign:paused", campaign)
            await trio.sleep(600)  # well past the decision time
            paused = await engine.campaign(campaign, OWNER)
            assert paused["status"] == "paused" and paused["ab_test"]["phase"] == "waiting"
            assert not log.of(campaign, "campaign:variant_chosen")
            assert len(gateway.sends) == sample_sends
            await engine.resume(campaign, OWNER)
            resumed_at = engine.clock.now()
            chosen = await log.wait_for("campaign:variant_chosen", campaign)
            await log.wait_for("campaign:completed", campaign)
    decided_at = iso_time(chosen.payload["decidedAt"])
    # Decided as soon as it runs again: its time had come while it was paused.
    assert iso_time(sampled.payload["decideAt"]) < decided_at
    assert decided_at - resumed_at < timedelta(seconds=30)
    assert len(gateway.sends) == 40
    assert len({s.message.recipient_id for s in gateway.sends}) == 40
