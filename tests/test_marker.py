"""The shared marker (engine/actors/marker.py): the groups of many campaigns marked in
one statement, each campaign's checks its own, each group its own rows and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
import trio_asyncio

from engine.actors.marker import Marker
from engine.store import campaign_runs, recipients
from engine.store.database import Database
from engine.store.errors import DatabaseUnavailable
from tests.store_helpers import (
    LEASE_OWNER,
    OWNER,
    make_account,
    make_campaign,
    make_contacts,
    make_running,
    utc_now,
)

T = TypeVar("T")


class GatedDatabase(Database):
    """The real database; counts statements, and holds each one until `gate` opens,
    so that groups arriving meanwhile queue behind it."""

    def __init__(self, inner: Database) -> None:
        super().__init__(inner._pool)
        self.statements = 0
        self.on_wire = trio.Event()
        self.gate = trio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.statements += 1
        self.on_wire.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return await super().fetch(query, *args)

    async def run(self, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        raise AssertionError("the marker makes one statement per crossing")


async def campaigns_with_rows(db: Database, count: int, size: int) -> list[tuple[str, list[int]]]:
    """`count` running campaigns (our lease) of `size` pending recipients each."""
    account = await make_account(db)
    await make_contacts(db, size)
    made = []
    for _ in range(count):
        campaign = await make_campaign(db, account)
        await make_running(db, campaign)
        rows = await db.fetch(
            "SELECT id FROM campaign_recipients WHERE campaign_id = $1 ORDER BY id", campaign
        )
        made.append((campaign, [r["id"] for r in rows]))
    return made


async def mark_while_one_is_on_the_wire(
    db: GatedDatabase, marker: Marker, groups: list[tuple[str, list[int]]]
) -> dict[str, list[int] | BaseException]:
    """The first group alone, then the others while its statement is held."""
    answers: dict[str, list[int] | BaseException] = {}

    async def mark(campaign: str, ids: list[int]) -> None:
        try:
            answers[campaign] = await marker.mark(campaign, ids, now=utc_now())
        except Exception as error:
            answers[campaign] = error

    db.gate = trio.Event()
    db.on_wire = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mark, *groups[0])
        await db.on_wire.wait()
        for group in groups[1:]:
            nursery.start_soon(mark, *group)
        await trio.testing.wait_all_tasks_blocked()
        db.gate.set()
    return answers


async def statuses(db: Database, campaign: str) -> dict[str, int]:
    return await recipients.count_by_status(db, campaign)


async def test_groups_of_several_campaigns_are_marked_in_one_statement(db: Database) -> None:
    made = await campaigns_with_rows(db, 5, 4)
    gated = GatedDatabase(db)
    marker = Marker(gated, lease_owner=LEASE_OWNER)
    groups = [(campaign, ids[:2]) for campaign, ids in made]

    with trio.fail_after(30):
        answers = await mark_while_one_is_on_the_wire(gated, marker, groups)

    # One statement for the first, one for the four that queued behind it.
    assert gated.statements == 2
    for campaign, ids in groups:
        assert answers[campaign] == ids
        assert await statuses(db, campaign) == {"sending": 2, "pending": 2}


async def test_a_paused_campaign_marks_nothing_and_the_others_all_theirs(db: Database) -> None:
    made = await campaigns_with_rows(db, 4, 3)
    paused, _ids = made[1]
    await campaign_runs.apply_action(db, paused, OWNER, "pause", now=utc_now())
    lost, _ids = made[2]
    await db.execute("UPDATE campaign_leases SET owner = 'another' WHERE campaign_id = $1", lost)
    gated = GatedDatabase(db)
    marker = Marker(gated, lease_owner=LEASE_OWNER)

    with trio.fail_after(30):
        answers = await mark_while_one_is_on_the_wire(gated, marker, made)

    assert gated.statements == 2
    assert answers[paused] == [] and answers[lost] == []
    assert await statuses(db, paused) == {"pending": 3}
    assert await statuses(db, lost) == {"pending": 3}
    for campaign, ids in (made[0], made[3]):
        assert answers[campaign] == ids
        assert await statuses(db, campaign) == {"sending": 3}


async def test_a_failing_group_does_not_strand_the_others(db: Database) -> None:
    made = await campaigns_with_rows(db, 3, 2)
    gated = GatedDatabase(db)
    marker = Marker(gated, lease_owner=LEASE_OWNER)
    # Not a campaign id PostgreSQL can read: the statement for all of them fails.
    broken = ("not-a-uuid", [made[0][1][0]])
    groups = [made[0], broken, made[1], made[2]]

    with trio.fail_after(30):
        answers = await mark_while_one_is_on_the_wire(gated, marker, groups)

    assert isinstance(answers["not-a-uuid"], Exception)
    assert not isinstance(answers["not-a-uuid"], DatabaseUnavailable)
    for campaign, ids in made:
        assert answers[campaign] == ids
        assert await statuses(db, campaign) == {"sending": 2}


async def test_an_outage_marks_nothing_and_every_group_hears_it(db: Database) -> None:
    made = await campaigns_with_rows(db, 3, 2)
    gated = GatedDatabase(db)
    marker = Marker(gated, lease_owner=LEASE_OWNER)
    gated.fail = DatabaseUnavailable("no answer from PostgreSQL within 1 s")

    with trio.fail_after(30):
        answers = await mark_while_one_is_on_the_wire(gated, marker, made)

    assert gated.statements == 2  # no group retried alone: it would fail the same
    for campaign, _ids in made:
        assert isinstance(answers[campaign], DatabaseUnavailable)
        assert await statuses(db, campaign) == {"pending": 2}
    # The marker is not stuck: the next groups are marked.
    gated.fail = None
    with trio.fail_after(30):
        answers = await mark_while_one_is_on_the_wire(gated, marker, made)
    for campaign, ids in made:
        assert answers[campaign] == ids


async def test_a_group_once_submitted_is_marked_and_answered_even_when_cancelled(
    db: Database,
) -> None:
    """Rows marked must reach their caller: a cancellation waits for the answer."""
    [(campaign, ids)] = await campaigns_with_rows(db, 1, 2)
    gated = GatedDatabase(db)
    marker = Marker(gated, lease_owner=LEASE_OWNER)
    gated.gate = trio.Event()
    answered: list[list[int]] = []

    async def mark(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            answered.append(await marker.mark(campaign, ids, now=utc_now()))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            scope = await nursery.start(mark)
            await gated.on_wire.wait()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            gated.gate.set()
    assert answered == [ids]
    assert await statuses(db, campaign) == {"sending": 2}


@pytest.mark.parametrize("size", [1, 3])
async def test_store_marks_each_group_its_own_rows(db: Database, size: int) -> None:
    made = await campaigns_with_rows(db, size, 3)
    groups = [recipients.MarkGroup(c, ids[:2], utc_now()) for c, ids in made]
    marked = await recipients.mark_sending_groups(db, groups, lease_owner=LEASE_OWNER)
    assert marked.marked == [ids[:2] for _c, ids in made] and not marked.busy
    # Marked already: nothing the second time.
    again = await recipients.mark_sending_groups(db, groups, lease_owner=LEASE_OWNER)
    assert again.marked == [[] for _ in made]


@pytest.mark.parametrize("then", ["commit a pause", "roll back"])
async def test_a_campaign_held_by_a_transaction_holds_up_only_its_own_group(
    db: Database, then: str
) -> None:
    """A pause being committed holds its campaign row: the others are marked at
    once; its group waits for it, and marks nothing if the pause commits."""
    made = await campaigns_with_rows(db, 3, 2)
    held, held_ids = made[1]
    marker = Marker(db, lease_owner=LEASE_OWNER)
    conn = await trio_asyncio.aio_as_trio(db._pool.acquire)()
    transaction = conn.transaction()
    await trio_asyncio.aio_as_trio(transaction.start)()
    await trio_asyncio.aio_as_trio(conn.execute)(
        "UPDATE campaigns SET status = 'paused' WHERE id = $1", held
    )
    answers: dict[str, list[int]] = {}
    others_done = trio.Event()

    async def mark(campaign: str, ids: list[int]) -> None:
        answers[campaign] = await marker.mark(campaign, ids, now=utc_now())
        if all(c in answers for c, _ in made if c != held):
            others_done.set()

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for campaign, ids in made:
                    nursery.start_soon(mark, campaign, ids)
                await others_done.wait()
                assert held not in answers  # it waits for the transaction
                assert marker.statements == 2  # all three, then the held one alone
                finish = transaction.commit if then == "commit a pause" else transaction.rollback
                await trio_asyncio.aio_as_trio(finish)()
    finally:
        await trio_asyncio.aio_as_trio(db._pool.release)(conn)

    for campaign, ids in (made[0], made[2]):
        assert answers[campaign] == ids
    if then == "commit a pause":
        assert answers[held] == []
        assert await statuses(db, held) == {"pending": 2}
    else:
        assert answers[held] == held_ids
