"""The engine's campaigns share one marker (engine/actors/marker.py): groups due at
the same moment are marked by one statement, and each campaign keeps its own pace."""

from __future__ import annotations

import itertools
from typing import Any

import trio
import trio.testing

from engine.store import recipients
from engine.store.database import Record
from tests.engine_helpers import send_times_to_completion
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import make_account, make_campaign, make_contacts
from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here

RATES = [60.0, 60.0, 60.0, 120.0, 30.0]  # per minute
RECIPIENTS = 6


class CountingMarks(VirtualTimeDatabase):
    """Counts the mark statements and the groups' rows they carry."""

    def __init__(self, db: VirtualTimeDatabase) -> None:
        super().__init__(db._inner, db.hold)
        self.statements = 0
        self.rows = 0

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        if query in (recipients.MARK_SENDING, recipients.MARK_SENDING_GROUPS):
            self.statements += 1
            self.rows += len(args[1])
        return await super().fetch(query, *args)


async def run_campaigns(
    counting: CountingMarks, rates: list[float]
) -> tuple[list[str], dict[str, list[float]]]:
    """Campaigns at `rates` (per minute) run to completion; each one's send times."""
    # A number fast enough that turns due together are not spread by its spacing.
    account = await make_account(counting, messages_per_second=100_000)
    await make_contacts(counting, RECIPIENTS)
    campaigns = [await make_campaign(counting, account, messages_per_minute=rate) for rate in rates]
    gateway = ScriptedGateway(latency=0.02)
    with trio.fail_after(3_600):
        sent_at = await send_times_to_completion(counting, gateway, campaigns)
    # Each recipient once; each campaign at its own rate.
    recipients = await counting.fetch("SELECT id FROM campaign_recipients")
    assert sorted(s.message.recipient_id for s in gateway.sends) == sorted(
        r["id"] for r in recipients
    )
    for campaign, rate in zip(campaigns, rates, strict=True):
        times = sent_at[campaign]
        assert len(times) == RECIPIENTS
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(abs(gap - 60 / rate) < 1e-3 for gap in gaps), (rate, gaps)
    return campaigns, sent_at


async def test_campaigns_due_together_share_mark_statements_and_keep_their_pace(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    counting = CountingMarks(db)
    await run_campaigns(counting, RATES)
    # One row per group at these rates: alone, each would be its own statement
    # (30); groups due at the same instant share one (16, the lone ones of the
    # 120/min and 30/min campaigns included).
    assert counting.rows == len(RATES) * RECIPIENTS
    assert counting.statements <= counting.rows * 2 / 3, (counting.statements, counting.rows)


async def test_campaigns_due_a_few_milliseconds_apart_wake_together_and_share_marks(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """Their turns drift apart by a third of a millisecond per message: each campaign
    woken at its own instant would mark each row alone (18 statements); woken on the
    dispatcher's grid (engine/actors/campaign/dispatch.py) they share most marks, and
    each one's sends still keep its own pace."""
    counting = CountingMarks(db)
    rates = [60.0, 60.01, 60.02]
    await run_campaigns(counting, rates)
    assert counting.rows == len(rates) * RECIPIENTS
    # Wherever the grid's steps fall: the first turns alone, then each later turn's
    # three rows in at most two statements (the three are under 2 ms apart).
    assert counting.statements <= len(rates) + 2 * (RECIPIENTS - 1), counting.statements
