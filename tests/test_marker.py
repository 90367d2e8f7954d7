"""The shared marker (engine/actors/marker.py): the groups of many campaigns marked in
one statement, each campaign's checks its own, each group its own rows and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
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


def gated_marker(db: Database) -> tuple[GatedDatabase, Marker]:
    """A marker on the real database behind a gate (GatedDatabase)."""
    gated = GatedDatabase(db)
    return gated, Marker(gated, lease_owner=LEASE_OWNER)


async def mark_while_one_is_on_the_wire(
    db: GatedDatabase, marker: Marker, groups: list[tuple[str, list[int]]]
) -> dict[str, list[int] | BaseException]:
    """The first group alone, then the others while its statement is held (30 s at most)."""
    answers: dict[str, list[int] | BaseException] = {}

    async def mark(campaign: str, ids: list[int]) -> None:
        try:
            answers[campaign] = await marker.mark(campaign, ids, now=utc_now())
        except Exception as error:
            answers[campaign] = error

    db.gate = trio.Event()
    db.on_wire = trio.Event()
    with trio.fail_after(30):
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


async def assert_each_answered(
    db: Database,
    answers: Mapping[str, object],
    groups: list[tuple[str, list[int]]],
    *,
    marked: bool,
    rows_after: dict[str, int],
) -> None:
    """Each group got its own ids back (`marked`) or none, and its campaign's recipients
    are then counted as `rows_after`."""
    for campaign, ids in groups:
        assert answers[campaign] == (ids if marked else [])
        assert await statuses(db, campaign) == rows_after


async def pause(db: Database, campaign: str) -> None:
    await campaign_runs.apply_action(db, campaign, OWNER, "pause", now=utc_now())


async def lose_the_lease(db: Database, campaign: str) -> None:
    await db.execute(
        "UPDATE campaign_leases SET owner = 'another' WHERE campaign_id = $1", campaign
    )


async def test_groups_of_several_campaigns_are_marked_in_one_statement(db: Database) -> None:
    made = await campaigns_with_rows(db, 5, 4)
    gated, marker = gated_marker(db)
    groups = [(campaign, ids[:2]) for campaign, ids in made]

    answers = await mark_while_one_is_on_the_wire(gated, marker, groups)

    # One statement for the first, one for the four that queued behind it.
    assert gated.statements == 2
    await assert_each_answered(
        db, answers, groups, marked=True, rows_after={"sending": 2, "pending": 2}
    )


async def test_small_groups_wait_for_the_statement_on_the_wire_and_enough_rows_do_not(
    db: Database,
) -> None:
    """A slow campaign's one-row group shares the next statement rather than making
    its own beside one on the wire; a group of `_ROWS_TO_OVERLAP` rows overlaps it,
    taking the small ones queued along."""
    (first, first_ids), (small, small_ids), (big, big_ids) = await campaigns_with_rows(db, 3, 4)
    gated, marker = gated_marker(db)
    answers: dict[str, list[int]] = {}

    async def mark(campaign: str, ids: list[int]) -> None:
        answers[campaign] = await marker.mark(campaign, ids, now=utc_now())

    gated.gate = trio.Event()
    on_the_wire: list[int] = []  # statements after each step
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mark, first, first_ids[:1])
            await gated.on_wire.wait()
            nursery.start_soon(mark, small, small_ids[:1])
            await trio.testing.wait_all_tasks_blocked()
            on_the_wire.append(gated.statements)
            nursery.start_soon(mark, big, big_ids[:3])  # 1 + 3 rows queued: enough
            await trio.testing.wait_all_tasks_blocked()
            on_the_wire.append(gated.statements)
            gated.gate.set()  # marks are not cancellable: asserted once all answered

    # The small group waited behind the first; the big one went beside it, with it.
    assert on_the_wire == [1, 2]
    assert gated.statements == 2
    assert answers == {first: first_ids[:1], small: small_ids[:1], big: big_ids[:3]}
    assert await statuses(db, small) == {"sending": 1, "pending": 3}


@pytest.mark.parametrize(
    "take_away",
    [
        pytest.param([pause], id="paused"),
        pytest.param([lose_the_lease], id="lease lost"),
        pytest.param([pause, lose_the_lease], id="one paused, one lease lost"),
    ],
)
async def test_a_campaign_no_longer_ours_to_send_marks_nothing_and_the_others_all_theirs(
    db: Database, take_away: list[Callable[[Database, str], Awaitable[None]]]
) -> None:
    made = await campaigns_with_rows(db, 4, 3)
    # Among the others: after the first, which goes alone, and before the last.
    held_back = made[1 : 1 + len(take_away)]
    for change, (campaign, _ids) in zip(take_away, held_back, strict=True):
        await change(db, campaign)
    others = [group for group in made if group not in held_back]
    gated, marker = gated_marker(db)

    answers = await mark_while_one_is_on_the_wire(gated, marker, made)

    assert gated.statements == 2
    await assert_each_answered(db, answers, held_back, marked=False, rows_after={"pending": 3})
    await assert_each_answered(db, answers, others, marked=True, rows_after={"sending": 3})


async def test_a_failing_group_does_not_strand_the_others(db: Database) -> None:
    made = await campaigns_with_rows(db, 3, 2)
    gated, marker = gated_marker(db)
    # Not a campaign id PostgreSQL can read: the statement for all of them fails.
    broken = ("not-a-uuid", [made[0][1][0]])
    groups = [made[0], broken, made[1], made[2]]

    answers = await mark_while_one_is_on_the_wire(gated, marker, groups)

    assert isinstance(answers["not-a-uuid"], Exception)
    assert not isinstance(answers["not-a-uuid"], DatabaseUnavailable)
    await assert_each_answered(db, answers, made, marked=True, rows_after={"sending": 2})


async def test_an_outage_marks_nothing_and_every_group_hears_it(db: Database) -> None:
    made = await campaigns_with_rows(db, 3, 2)
    gated, marker = gated_marker(db)
    gated.fail = DatabaseUnavailable("no answer from PostgreSQL within 1 s")

    answers = await mark_while_one_is_on_the_wire(gated, marker, made)

    assert gated.statements == 2  # no group retried alone: it would fail the same
    for campaign, _ids in made:
        assert isinstance(answers[campaign], DatabaseUnavailable)
        assert await statuses(db, campaign) == {"pending": 2}
    # The marker is not stuck: the next groups are marked.
    gated.fail = None
    answers = await mark_while_one_is_on_the_wire(gated, marker, made)
    await assert_each_answered(db, answers, made, marked=True, rows_after={"sending": 2})


async def test_a_group_once_submitted_is_marked_and_answered_even_when_cancelled(
    db: Database,
) -> None:
    """Rows marked must reach their caller: a cancellation waits for the answer."""
    [(campaign, ids)] = await campaigns_with_rows(db, 1, 2)
    gated, marker = gated_marker(db)
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


@pytest.mark.parametrize(
    "campaigns",
    [
        pytest.param(1, id="one campaign, the plain statement"),
        pytest.param(3, id="three campaigns in one statement"),
    ],
)
async def test_store_marks_each_group_its_own_rows(db: Database, campaigns: int) -> None:
    made = await campaigns_with_rows(db, campaigns, 3)
    groups = [recipients.MarkGroup(c, ids[:2], utc_now()) for c, ids in made]
    marked = await recipients.mark_sending_groups(db, groups, lease_owner=LEASE_OWNER)
    assert marked.marked == [ids[:2] for _c, ids in made] and not marked.busy
    # Marked already: nothing the second time.
    again = await recipients.mark_sending_groups(db, groups, lease_owner=LEASE_OWNER)
    assert again.marked == [[] for _ in made]


@pytest.mark.parametrize(
    ("finish", "held_marked", "held_rows_after"),
    [
        pytest.param("commit", False, {"pending": 2}, id="commit a pause"),
        pytest.param("rollback", True, {"sending": 2}, id="roll back"),
    ],
)
async def test_a_campaign_held_by_a_transaction_holds_up_only_its_own_group(
    db: Database, finish: str, held_marked: bool, held_rows_after: dict[str, int]
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
                await trio_asyncio.aio_as_trio(getattr(transaction, finish))()
    finally:
        await trio_asyncio.aio_as_trio(db._pool.release)(conn)

    others = [made[0], made[2]]
    await assert_each_answered(db, answers, others, marked=True, rows_after={"sending": 2})
    await assert_each_answered(
        db, answers, [(held, held_ids)], marked=held_marked, rows_after=held_rows_after
    )
