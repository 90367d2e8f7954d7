"""The dispatch path's ordering: a recipient is `sending` only around its own request.

Every wait (the account budget, a 130429 slow-down, a retry backoff) happens
while it is `pending`; a request that may have reached WhatsApp is never
retried; slots come back whatever happens to an actor; a crash leaves at most
the documented number of sends in doubt (docs/delivery-guarantees.md).
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from datetime import datetime

import pytest
import trio
import trio.testing

from engine.actors.account_budget import LocalAccountBudget
from engine.gateway import OutgoingMessage, SendResult
from engine.service.engine import Engine
from engine.store import recipients
from engine.store.database import Database
from tests.engine_helpers import EventLog, change_rate, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_campaign, make_contacts, phone
from tests.virtual_time import virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here

# engine/actors/campaign/dispatch.py: a group spans 10 ms of turns and is marked a
# lead ahead of its first, 2 ms at least (more only when marks are slow; on virtual
# time a statement takes no time at all).
HORIZON = 0.002 + 0.01
THROTTLED = SendResult(ok=False, http_status=400, error_code=130429, error_message="Rate limit")
TRANSIENT = SendResult(ok=False, http_status=500, error_code=131000, error_message="Something")
TIMED_OUT = SendResult(ok=False, error_message="timeout", may_have_arrived=True)


async def run_to_completion(
    db: Database,
    gateway: ScriptedGateway,
    *,
    contacts: int,
    per_minute: float,
    account_mps: int = 1_000,
    **settings: str,
) -> tuple[str, Engine]:
    account = await make_account(db, messages_per_second=account_mps)
    await make_contacts(db, contacts)
    log = EventLog()
    async with trio.open_nursery() as nursery:
        async with running_engine(db, gateway, engine_settings(**settings)) as engine:
            await nursery.start(log.collect, engine)
            campaign = await make_campaign(db, account, messages_per_minute=per_minute)
            await log.wait_for("campaign:completed", campaign)
        nursery.cancel_scope.cancel()
    return campaign, engine


async def marked_at(db: Database, engine: Engine) -> dict[str, float]:
    """Each recipient's last `sending` mark, as a trio time, by phone."""
    rows = await db.fetch("SELECT phone, sending_at FROM campaign_recipients")
    moments: dict[str, datetime] = {r["phone"]: r["sending_at"] for r in rows}
    return {p: engine.clock.trio_time_at(at) for p, at in moments.items()}


def sends_to(gateway: ScriptedGateway, to: str) -> list[float]:
    return [s.at for s in gateway.sends if s.message.to == to]


async def test_each_row_is_marked_at_most_one_group_before_its_request(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.02)
    with trio.fail_after(36_000):
        _, engine = await run_to_completion(
            db, gateway, contacts=300, per_minute=30_000, sender_concurrency="5"
        )
    marks = await marked_at(db, engine)
    for send in gateway.sends:
        waited = send.at - marks[send.message.to]
        # At most the horizon, plus one request for a sender to free up.
        assert -1e-6 <= waited <= HORIZON + gateway.latency + 1e-6, (send.message.to, waited)


async def test_a_backoff_leaves_the_recipient_pending(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    flaky = phone(3)

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        return TRANSIENT if message.to == flaky and attempt == 1 else None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        campaign, engine = await run_to_completion(db, gateway, contacts=10, per_minute=60_000)
    first, second = sends_to(gateway, flaky)
    assert second - first >= 0.5  # backoff base 1 s, equal jitter
    # Marked again just before the retry: it waited out the backoff as `pending`.
    assert (await marked_at(db, engine))[flaky] >= second - HORIZON - 1e-6
    row = await db.fetchrow(
        "SELECT status, attempts FROM campaign_recipients WHERE phone = $1", flaky
    )
    assert row is not None and (row["status"], row["attempts"]) == ("sent", 2)
    assert await recipients.count_by_status(db, campaign) == {"sent": 10}


async def test_a_throttled_account_keeps_every_waiting_recipient_pending(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        return THROTTLED if message.to == phone(0) and attempt == 1 else None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        _, engine = await run_to_completion(
            db,
            gateway,
            contacts=20,
            per_minute=60_000,
            sender_concurrency="1",
            sender_prefetch="0",
            sender_throttle_slowdown_seconds="5",
        )
    throttled_at = sends_to(gateway, phone(0))[0]
    slowed_until = throttled_at + gateway.latency + 5.0
    marks = await marked_at(db, engine)
    later = [s for s in gateway.sends if s.at > throttled_at]
    assert later and all(s.at >= slowed_until - 1e-6 for s in later)
    # None of them was marked while the account was slowed down.
    assert all(marks[s.message.to] >= slowed_until - HORIZON - 1e-6 for s in later)


async def test_a_request_that_may_have_arrived_is_in_doubt_and_never_repeated(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    lost = phone(4)

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        return TIMED_OUT if message.to == lost else None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        campaign, _ = await run_to_completion(
            db, gateway, contacts=10, per_minute=60_000, delivery_in_doubt_timeout="60"
        )
    assert len(sends_to(gateway, lost)) == 1
    row = await db.fetchrow(
        "SELECT status, error_code, attempts FROM campaign_recipients WHERE phone = $1", lost
    )
    assert row is not None
    # Unresolved within the in-doubt timeout: failed as unknown, never sent twice.
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", "outcome_unknown", 1)
    assert await recipients.count_by_status(db, campaign) == {"sent": 9, "failed": 1}


async def test_a_campaign_never_sends_more_than_its_rate_plus_one_in_any_second(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.003)
    with trio.fail_after(36_000):
        await run_to_completion(db, gateway, contacts=400, per_minute=3_000)
    times = sorted(s.at for s in gateway.sends)
    busiest = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    assert busiest <= 3_000 / 60 + 1


async def test_slots_come_back_when_an_actor_stops_with_requests_in_flight(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    settings = engine_settings(sender_concurrency="3", engine_lease_ttl_seconds="3")
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=1_000)
        await make_contacts(db, 30)
        log = EventLog()
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:
                await nursery.start(log.collect, engine)
                gateway.block_after(5)
                first = await make_campaign(db, account, messages_per_minute=60_000)
                await gateway.wait_held(3)
                # The lease is lost with every sender stuck in one of its requests.
                await db.execute("DELETE FROM campaign_leases WHERE campaign_id = $1", first)
                await db.execute("UPDATE campaigns SET status = 'paused' WHERE id = $1", first)
                # Virtual time past the lease renewal and the shutdown grace: the
                # actor ends while its requests are still in flight.
                await trio.sleep(30)
                assert not engine.statistics().supervisor.running
                gateway.release()
                second = await make_campaign(db, account, messages_per_minute=60_000)
                await log.wait_for("campaign:completed", second)
                pool = engine.statistics().sender_pool
                assert pool.slots_in_use == 0
            nursery.cancel_scope.cancel()
    assert await recipients.count_by_status(db, second) == {"sent": 30}


async def test_slots_come_back_when_an_actor_stops_during_a_budget_reservation(
    db: Database, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number's budget that does not answer (a shared one waits for Redis) while the
    dispatcher holds sender slots for the group it reserves turns for: stopping the
    actor gives those slots back."""
    reserve = LocalAccountBudget.reserve
    stuck = trio.Event()

    async def hanging_reserve(
        self: LocalAccountBudget, number: str, rate: float, count: int, horizon: float
    ) -> list[float]:
        if stuck.is_set() or len(gateway.sends) >= 5:
            stuck.set()
            await trio.sleep_forever()
        return await reserve(self, number, rate, count, horizon)

    monkeypatch.setattr(LocalAccountBudget, "reserve", hanging_reserve)
    gateway = ScriptedGateway(latency=0.01)
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=1_000)
        await make_contacts(db, 30)
        log = EventLog()
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, engine_settings()) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(db, account, messages_per_minute=60_000)
                await stuck.wait()
                await engine.pause(campaign, OWNER)
                await log.wait_for("campaign:paused", campaign)
                await trio.testing.wait_all_tasks_blocked()
                assert not engine.statistics().supervisor.running
                assert engine.statistics().sender_pool.slots_in_use == 0
            nursery.cancel_scope.cancel()


async def test_slots_come_back_when_a_mark_statement_fails(
    db: Database, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mark that fails for another reason than an outage ends the actor with its
    error; its group's slots come back, and the campaign is taken up again and ends."""
    mark = recipients.mark_sending
    failures = 0

    async def failing_once(*args: object, **kwargs: object) -> object:
        nonlocal failures
        if failures == 0 and len(gateway.sends) >= 5:
            failures += 1
            raise RuntimeError("the statement failed")
        return await mark(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(recipients, "mark_sending", failing_once)
    gateway = ScriptedGateway(latency=0.01)
    with trio.fail_after(36_000):
        campaign, engine = await run_to_completion(
            db, gateway, contacts=30, per_minute=60_000, sender_concurrency="3"
        )
        assert failures == 1
        assert engine.statistics().supervisor.crashed == 1
        assert engine.statistics().sender_pool.slots_in_use == 0
    assert await recipients.count_by_status(db, campaign) == {"sent": 30}


@pytest.mark.parametrize("seed", range(4))
async def test_a_crash_at_any_point_leaves_at_most_the_bound_in_doubt(
    db: Database, autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    concurrency, prefetch = 4, 3
    rng = random.Random(seed)
    gateway = ScriptedGateway(latency=0.02)
    # Requests hang from a random point on, as if WhatsApp stopped answering; the
    # daemon then stops with whatever it has marked, written or answered.
    gateway.block_after(rng.randrange(0, 150))
    settings = engine_settings(sender_concurrency=str(concurrency), sender_prefetch=str(prefetch))
    with trio.fail_after(36_000):
        account = await make_account(db, messages_per_second=1_000)
        await make_contacts(db, 200)
        with trio.move_on_after(rng.uniform(0.05, 3.0)):
            async with running_engine(db, gateway, settings):
                campaign = await make_campaign(db, account, messages_per_minute=30_000)
                await trio.sleep_forever()
    unresolved = await db.fetchval(
        "SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1 AND status = 'sending'",
        campaign,
    )
    # Written or awaited, marked ahead, answered but not stored (docs/delivery-guarantees.md).
    assert unresolved <= concurrency + prefetch + concurrency
    sent = {s.message.to for s in gateway.sends}
    stored = await db.fetchval(
        "SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1 AND status = 'sent'",
        campaign,
    )
    assert stored <= len(sent)


async def test_a_rate_drop_applies_at_once_to_sends_marked_ahead(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    """60,000/min → 60/min: sends timed at the old rate and not yet written go back and
    are timed again; none of the ones marked ahead goes out at the old rate."""
    hundred_sent = trio.Event()

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        if len(gateway.sends) >= 100:
            hundred_sent.set()
        return None

    gateway = ScriptedGateway(script, latency=0.05)
    account = await make_account(db, messages_per_second=1_000)
    await make_contacts(db, 300)
    log = EventLog()
    with trio.fail_after(36_000):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(db, account, messages_per_minute=60_000)
                await hundred_sent.wait()
                await change_rate(db, engine, campaign, 60)
                changed_at = trio.current_time()
                await trio.sleep(5)
                await engine.pause(campaign, OWNER)
                await log.wait_for("campaign:paused", campaign)
            nursery.cancel_scope.cancel()
    after = [s.at for s in gateway.sends if s.at > changed_at]
    # At 1/s: at most the token that had accrued, then one a second.
    assert len(after) <= 1 + 5 + 1
    assert await recipients.count_by_status(db, campaign) == {
        "sent": len(gateway.sends),
        "pending": 300 - len(gateway.sends),
    }


async def test_stranded_sending_rows_end_in_doubt_and_the_campaign_finishes(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    """Rows left `sending` by nobody (an actor that crashed, a daemon killed during a
    pause's drain) are resolved as in doubt; the dispatcher never spins on them."""
    gateway = ScriptedGateway(latency=0.01)
    account = await make_account(db, messages_per_second=1_000)
    await make_contacts(db, 30)
    statements = 0
    for name in ("fetch", "fetchrow", "fetchval", "execute", "run", "transaction"):
        original = getattr(db, name)

        async def counted(*args: object, _original: object = original) -> object:
            nonlocal statements
            statements += 1
            return await _original(*args)  # type: ignore[operator]

        setattr(db, name, counted)
    settings = engine_settings(delivery_in_doubt_timeout="60")
    log = EventLog()
    with trio.fail_after(36_000):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(
                    db, account, schedule_type="manual", messages_per_minute=60_000
                )
                await engine.start(campaign, OWNER)
                await engine.pause(campaign, OWNER)
                await log.wait_for("campaign:paused", campaign)
                stranded = await db.fetch(
                    """UPDATE campaign_recipients SET status = 'sending', sending_at = now()
                       WHERE id IN (SELECT id FROM campaign_recipients
                                    WHERE campaign_id = $1 AND status = 'pending'
                                    ORDER BY id LIMIT 3)
                       RETURNING phone""",
                    campaign,
                )
                before = statements
                await engine.resume(campaign, OWNER)
                await log.wait_for("campaign:completed", campaign)
                used = statements - before
            nursery.cancel_scope.cancel()
    stranded_phones = {r["phone"] for r in stranded}
    assert stranded_phones and not {s.message.to for s in gateway.sends} & stranded_phones
    counts = await recipients.count_by_status(db, campaign)
    assert counts["failed"] == len(stranded_phones)  # in doubt, then unresolved: unknown
    assert counts["sent"] == 30 - len(stranded_phones)
    assert used < 300  # a bounded number of queries, not a loop


async def test_a_shutdown_during_a_pause_drain_is_bounded_by_the_grace(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway(latency=0.01)
    settings = engine_settings(sender_concurrency="3", server_shutdown_grace_seconds="2")
    account = await make_account(db, messages_per_second=1_000)
    await make_contacts(db, 20)
    log = EventLog()
    with trio.fail_after(36_000):
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:
                await nursery.start(log.collect, engine)
                gateway.block_after(2)
                campaign = await make_campaign(db, account, messages_per_minute=60_000)
                await gateway.wait_held(3)
                await engine.pause(campaign, OWNER)
                # The pause's drain waits for the three stuck requests; now the
                # daemon is told to stop.
                stopping_at = trio.current_time()
            stopped_at = trio.current_time()
            nursery.cancel_scope.cancel()
    # The grace (2 s) bounds the drain, even one a pause had started.
    assert stopped_at - stopping_at <= 2 + 0.5


async def test_a_user_at_the_marketing_limit_is_deferred_a_day_then_failed_at_the_cap(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    limited = phone(2)
    at_limit = SendResult(ok=False, http_status=400, error_code=131049, error_message="limit")

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        return at_limit if message.to == limited else None

    gateway = ScriptedGateway(script, latency=0.01)
    with trio.fail_after(36_000):
        campaign, _ = await run_to_completion(
            db,
            gateway,
            contacts=5,
            per_minute=60_000,
            delivery_max_deferrals="2",
            # A day by default (engine/core/retry.py); ten minutes keep virtual time short.
            delivery_deferral_seconds="600",
        )
    tries = sends_to(gateway, limited)
    # First try, then one after each of the two deferrals; then failed.
    assert len(tries) == 3
    assert all(later - earlier >= 600 for earlier, later in itertools.pairwise(tries))
    row = await db.fetchrow(
        "SELECT status, error_code, deferrals FROM campaign_recipients WHERE phone = $1", limited
    )
    assert row is not None and (row["status"], row["error_code"], row["deferrals"]) == (
        "failed",
        "131049",
        2,
    )
    assert await recipients.count_by_status(db, campaign) == {"sent": 4, "failed": 1}


async def test_a_restricted_number_pauses_every_campaign_sending_through_it(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    spam_limited = SendResult(ok=False, http_status=400, error_code=131048, error_message="Spam")

    other_number: set[int] = set()  # recipient ids of the campaign on the other number

    def script(message: OutgoingMessage, attempt: int) -> SendResult | None:
        # Only the restricted number refuses, from some point on; the other keeps sending.
        restricted = other_number and message.recipient_id not in other_number
        return spam_limited if restricted and len(gateway.sends) > 20 else None

    gateway = ScriptedGateway(script, latency=0.01)
    log = EventLog()
    with trio.fail_after(36_000):
        restricted = await make_account(db, messages_per_second=50, phone_number_id="PN-R")
        other = await make_account(db, messages_per_second=50, phone_number_id="PN-OK")
        await make_contacts(db, 60)
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway) as engine:
                await nursery.start(log.collect, engine)
                first = await make_campaign(db, restricted, messages_per_minute=1_200)
                second = await make_campaign(db, restricted, messages_per_minute=1_200)
                elsewhere = await make_campaign(db, other, messages_per_minute=1_200)
                other_number.update(
                    r["id"]
                    for r in await db.fetch(
                        "SELECT id FROM campaign_recipients WHERE campaign_id = $1", elsewhere
                    )
                )
                paused = await log.wait_for("campaign:paused", first)
                await log.wait_for("campaign:paused", second)
                await log.wait_for("campaign:completed", elsewhere)
            nursery.cancel_scope.cancel()
    assert "131048" in paused.payload["reason"]
    statuses = {
        r["id"]: (r["status"], r["pause_reason"])
        for r in await db.fetch("SELECT id, status, pause_reason FROM campaigns")
    }
    for campaign in (first, second):
        status, reason = statuses[uuid.UUID(campaign)]
        assert status == "paused" and "131048" in reason
    assert statuses[uuid.UUID(elsewhere)][0] == "completed"


async def test_marks_slower_than_a_group_cost_no_turns(
    db: Database, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each mark takes 30 ms, three times a group's span: groups wait for a place on
    the wire before they reserve turns, and the lead grows at once to cover a slow
    mark, so no send is handed over too late to be written (none is put back) and
    the campaign keeps its pace."""
    slow = 0.03
    marks = (recipients.mark_sending, recipients.mark_sending_groups)

    async def mark_sending(*args: object, **kwargs: object) -> object:
        await trio.sleep(slow)
        return await marks[0](*args, **kwargs)  # type: ignore[arg-type]

    async def mark_sending_groups(*args: object, **kwargs: object) -> object:
        await trio.sleep(slow)
        return await marks[1](*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(recipients, "mark_sending", mark_sending)
    monkeypatch.setattr(recipients, "mark_sending_groups", mark_sending_groups)
    gateway = ScriptedGateway(latency=0.02)
    with trio.fail_after(36_000):
        _, engine = await run_to_completion(
            db, gateway, contacts=400, per_minute=30_000, sender_concurrency="50"
        )
    assert engine.statistics().sender_pool.released == 0
    times = sorted(s.at for s in gateway.sends)
    assert len(times) == 400
    # 500 a second: 399 intervals of 2 ms, and the first marks' start-up.
    assert times[-1] - times[0] <= 399 / 500 + 0.1
