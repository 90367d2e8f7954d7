"""How PostgreSQL runs the statement that stores every send's outcome: it plans
it at each execution (engine/store/database.py), for batches of up to
`sender.concurrency` outcomes, so its plan must stay the simplest one."""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from engine.messages import Outcome
from engine.store import recipients
from engine.store.database import Connection, Database
from tests.store_helpers import LEASE_OWNER, plan_nodes, running_campaign, utc_now

BATCH = 300


class _RolledBack(Exception):
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan


async def _executed_plan(db: Database, query: str, *args: Any) -> dict[str, Any]:
    """Run `query` once as the daemon does, then roll it back: its plan, as run."""

    async def explain(conn: Connection) -> dict[str, Any]:
        try:
            async with conn.transaction():
                rows = await conn.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
                raise _RolledBack(msgspec.json.decode(rows[0][0])[0]["Plan"])
        except _RolledBack as done:
            return done.plan

    return await db.run(explain)


async def test_recording_outcomes_reads_its_batch_once(
    db: Database,
) -> None:
    """The statement once joined the outcomes with their locked rows: EXPLAIN put
    its planning at ~10 ms (it is planned at each execution), and PostgreSQL's
    backend spent two to four times the CPU per outcome on batches of 150 to 300
    (benchmarks/README.md). Each outcome now rides along with its row's lock:
    the batch is read once, and the rows updated are the rows locked (which scan
    finds them is the planner's choice, by the table's size)."""
    with trio.fail_after(60):
        campaign, pending = await running_campaign(db, BATCH)
        ids = await recipients.mark_sending(
            db, campaign, pending, lease_owner=LEASE_OWNER, now=utc_now()
        )
        n = len(ids)
        plan = await _executed_plan(
            db,
            recipients._RECORD_OUTCOMES,
            ids,
            ["sent"] * n,
            [1] * n,
            [f"wamid.{i}" for i in ids],
            [None] * n,
            [None] * n,
            [None] * n,
            utc_now(),
            [False] * n,
            [False] * n,
        )
        # Rolled back: the rows are still to be recorded, and are, by the same statement.
        assert await recipients.count_by_status(db, campaign) == {"sending": BATCH}
        stored = await recipients.record_outcomes(
            db,
            [Outcome(i, "sent", 1, provider_message_id=f"wamid.{i}") for i in ids],
            now=utc_now(),
        )
    assert n == BATCH
    assert plan["Actual Rows"] == BATCH  # every outcome applied
    scans = [node["Node Type"] for node in plan_nodes(plan)].count("Function Scan")
    assert scans == 1  # the batch, read once
    assert stored.changed == BATCH
    assert await recipients.count_by_status(db, campaign) == {"sent": BATCH}
