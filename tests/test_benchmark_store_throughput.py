"""`python -m benchmarks.store_throughput` measures what it names, on a small store."""

from __future__ import annotations

from benchmarks.store_throughput import _measure
from engine.store.database import Database


async def test_it_materialises_marks_and_records_every_recipient(db: Database) -> None:
    figures = await _measure(db, 50, 20)  # batches of 20: the last one partial

    assert (figures["recipients"], figures["batch"]) == (50, 20)
    assert all(figures[name] > 0 for name in figures)
    statuses = await db.fetch("SELECT status, count(*) AS n FROM campaign_recipients GROUP BY 1")
    assert [(r["status"], r["n"]) for r in statuses] == [("sent", 50)]
