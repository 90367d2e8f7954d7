"""The webhook applier and the statement it runs: strict matching (reference, number,
wamid, never a pending recipient), its backlog bound, and a database that fails."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import msgspec
import trio
import trio.testing

from engine.actors import broadcaster as broadcaster_actor
from engine.actors import webhook_applier
from engine.actors.broadcaster import Broadcaster
from engine.actors.webhook_applier import WebhookApplier
from engine.messages import CampaignEvent, Outcome, StatusUpdate
from engine.settings import WebhookSettings
from engine.store import recipients, statuses
from engine.store.database import Database, Record
from tests.store_helpers import (
    LEASE_OWNER,
    make_account,
    make_campaign,
    make_contacts,
    make_running,
    utc_now,
)
from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]

T = TypeVar("T")

T0 = datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC)


def facts(count: int) -> list[StatusUpdate]:
    return [StatusUpdate(i, None, "delivered", datetime.now(UTC)) for i in range(count)]


def test_a_full_backlog_refuses_the_whole_batch_and_queues_nothing() -> None:
    applier = WebhookApplier(max_queued=5)
    assert applier.submit(facts(3))
    assert not applier.submit(facts(3), refused=2)
    assert applier.statistics().queued == 3
    assert applier.statistics().refused == 0  # a refused request counts nothing
    assert applier.submit(facts(2), refused=1)
    assert (applier.statistics().queued, applier.statistics().refused) == (5, 1)


# --- strict matching, on the real statement ---------------------------------------------


class Recipients(msgspec.Struct, frozen=True):
    campaign: str
    pending: int
    sending: int  # marked, its answer not stored yet (no wamid)
    sent: int  # wamid "wamid.sent" stored
    in_doubt: int  # no wamid


async def one_of_each(db: Database) -> Recipients:
    """A running campaign on account number "PN1" with a recipient in each state."""
    account = await make_account(db)  # phone_number_id "PN1"
    await make_contacts(db, 4)
    campaign = await make_campaign(db, account)
    await make_running(db, campaign)
    claimed = await recipients.claim_batch(db, campaign, after_id=0, limit=4, now=utc_now())
    pending, sending, sent, in_doubt = (r.id for r in claimed)
    now = utc_now()
    await recipients.mark_sending(db, campaign, [sent, in_doubt], lease_owner=LEASE_OWNER, now=now)
    await recipients.record_outcomes(
        db, [Outcome(sent, "sent", 1, provider_message_id="wamid.sent")], now=now
    )
    assert await recipients.mark_abandoned_in_doubt(db, campaign) == 1
    await recipients.mark_sending(db, campaign, [sending], lease_owner=LEASE_OWNER, now=now)
    return Recipients(campaign, pending, sending, sent, in_doubt)


async def row(db: Database, recipient_id: int) -> Record:
    found = await db.fetchrow("SELECT * FROM campaign_recipients WHERE id = $1", recipient_id)
    assert found is not None
    return found


def fact(
    recipient_id: int | None,
    wamid: str,
    kind: Any = "delivered",
    number: str = "PN1",
    **extra: Any,
) -> StatusUpdate:
    return StatusUpdate(recipient_id, wamid, kind, T0, phone_number_id=number, **extra)


async def test_a_status_applies_only_from_the_number_of_the_recipients_account(
    db: Database,
) -> None:
    with trio.fail_after(30):
        r = await one_of_each(db)
        foreign = [
            fact(r.in_doubt, "wamid.d", number="PN-OTHER"),  # by reference
            fact(None, "wamid.sent", number="PN-OTHER"),  # by wamid
            fact(None, "wamid.sent", "replied", number="PN-OTHER"),
        ]
        applied = await statuses.apply_status_updates(db, foreign)
        assert (applied.matched, applied.campaigns, applied.resolved_in_doubt) == (0, [], [])
        assert (await row(db, r.in_doubt))["status"] == "in_doubt"
        sent = await row(db, r.sent)
        assert (sent["status"], sent["delivered_at"], sent["replied_at"]) == ("sent", None, None)

        ours = [
            fact(r.in_doubt, "wamid.d"),
            fact(None, "wamid.sent"),
            fact(None, "wamid.sent", "replied"),
        ]
        applied = await statuses.apply_status_updates(db, ours)
        assert applied.matched == 3 and applied.resolved_in_doubt == [r.campaign]
        resolved = await row(db, r.in_doubt)
        assert (resolved["status"], resolved["provider_message_id"]) == ("delivered", "wamid.d")
        sent = await row(db, r.sent)
        assert (sent["status"], sent["replied_at"]) == ("delivered", T0)


async def test_once_a_wamid_is_stored_only_that_wamid_applies(db: Database) -> None:
    with trio.fail_after(30):
        r = await one_of_each(db)
        # A valid reference to the recipient, but for another message.
        applied = await statuses.apply_status_updates(db, [fact(r.sent, "wamid.other", "read")])
        assert applied.matched == 0
        assert (await row(db, r.sent))["status"] == "sent"
        applied = await statuses.apply_status_updates(db, [fact(r.sent, "wamid.sent", "read")])
        assert applied.matched == 1
        assert (await row(db, r.sent))["status"] == "read"


async def test_a_status_never_moves_a_pending_recipient(db: Database) -> None:
    with trio.fail_after(30):
        r = await one_of_each(db)
        before = await recipients.campaign_stats(db, r.campaign)
        applied = await statuses.apply_status_updates(
            db, [fact(r.pending, "wamid.p", "read"), fact(r.pending, "wamid.p", "failed")]
        )
        assert applied.matched == 0
        pending = await row(db, r.pending)
        assert (pending["status"], pending["provider_message_id"]) == ("pending", None)
        assert await recipients.campaign_stats(db, r.campaign) == before


async def test_a_status_overtaking_the_stored_answer_applies_by_reference(db: Database) -> None:
    with trio.fail_after(30):
        r = await one_of_each(db)
        applied = await statuses.apply_status_updates(db, [fact(r.sending, "wamid.b", "sent")])
        assert applied.matched == 1
        sending = await row(db, r.sending)
        assert (sending["status"], sending["provider_message_id"]) == ("sent", "wamid.b")
        # Without a reference, a wamid not stored yet matches nothing (counted unmatched).
        applied = await statuses.apply_status_updates(db, [fact(None, "wamid.unknown")])
        assert applied.matched == 0


# --- a database that fails ---------------------------------------------------------------


class FailingDatabase(Database):
    """The real (virtual-time) database; while `down`, every statement fails as when
    PostgreSQL restarts under an open connection."""

    def __init__(self, inner: VirtualTimeDatabase) -> None:
        self._inner = inner
        self.down = False
        self.failures: list[float] = []  # trio times of the failed statements
        self._failed = trio.Event()

    async def failed(self, times: int) -> None:
        while len(self.failures) < times:
            await self._failed.wait()

    def _check(self) -> None:
        if self.down:
            self.failures.append(trio.current_time())
            self._failed.set()
            self._failed = trio.Event()
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        self._check()
        return await self._inner.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Record | None:
        self._check()
        return await self._inner.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self._check()
        return await self._inner.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        self._check()
        return await self._inner.execute(query, *args)

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._check()
        return await self._inner.run(operation, *args)

    async def transaction(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._check()
        return await self._inner.transaction(operation, *args)


async def stats_event(broadcaster: Broadcaster, campaign_id: str, **want: int) -> Any:
    async with broadcaster.subscribe() as events:
        async for event in events:
            if (
                isinstance(event, CampaignEvent)
                and event.name == "campaign:stats"
                and event.payload["campaignId"] == campaign_id
                and all(event.payload["stats"][k] == v for k, v in want.items())
            ):
                return event.payload
    raise AssertionError("broadcaster closed")


def deliveries(ids: Sequence[int]) -> list[StatusUpdate]:
    return [StatusUpdate(i, None, "delivered", T0, phone_number_id="PN1") for i in ids]


async def test_a_database_error_keeps_the_facts_and_retries_with_backoff(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(36_000):
        account = await make_account(db)
        await make_contacts(db, 6)
        campaign = await make_campaign(db, account)
        await make_running(db, campaign)
        claimed = await recipients.claim_batch(db, campaign, after_id=0, limit=6, now=utc_now())
        ids = [r.id for r in claimed]
        await recipients.mark_sending(db, campaign, ids, lease_owner=LEASE_OWNER, now=utc_now())
        await recipients.record_outcomes(db, [Outcome(i, "sent", 1) for i in ids], now=utc_now())

        failing = FailingDatabase(db)
        settings = WebhookSettings(flush_interval_ms=10)
        async with trio.open_nursery() as nursery:
            broadcaster: Broadcaster = await nursery.start(broadcaster_actor.run)
            applier: WebhookApplier = await nursery.start(
                webhook_applier.run, failing, broadcaster, settings
            )
            failing.down = True
            assert applier.submit(deliveries(ids[:3]))
            await failing.failed(3)
            # Still taking facts while the database is away, and losing none.
            assert applier.submit(deliveries(ids[3:]), refused=1)
            await failing.failed(4)
            stats = applier.statistics()
            assert (stats.queued, stats.applied_facts, stats.apply_errors) == (6, 0, 4)

            failing.down = False
            payload = await stats_event(broadcaster, campaign, delivered=6)
            nursery.cancel_scope.cancel()

    assert payload["stats"]["sent"] == 6
    stats = applier.statistics()
    assert (stats.queued, stats.applied_facts, stats.unmatched, stats.refused) == (0, 6, 0, 1)
    assert stats.apply_errors == 4
    # Exponential backoff between the attempts: 0.5 s, 1 s, 2 s (plus the flush interval).
    times = failing.failures
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert [round(g - 0.01, 3) for g in gaps] == [0.5, 1.0, 2.0]
    assert await recipients.count_by_status(db, campaign) == {"delivered": 6}
