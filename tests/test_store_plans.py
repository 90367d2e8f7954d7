"""The per-message statements are planned once (engine/store/database.py): any
plan of theirs must cost in proportion to its batch, since one generic plan
serves every batch size, and the daemon's database must run them that way."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import trio

from engine.messages import Outcome, StatusUpdate
from engine.store import recipients, statuses
from engine.store.database import Connection, Database, open_database, planned_once
from tests.store_helpers import (
    LEASE_OWNER,
    make_account,
    make_campaign,
    make_contacts,
    make_running,
    utc_now,
)

BATCH = 300


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", ()) for n in _nodes(child))]


def _literal(value: Any) -> str:
    """`value` as an SQL literal of unknown type (the prepared statement's
    parameter types decide): enough for the ids, names and moments used here."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        items = ",".join("NULL" if v is None else f'"{v}"' for v in value)
        return f"'{{{items}}}'"
    return f"'{value}'"


async def _produced(db: Database, query: str, *args: Any) -> int:
    """Run `query` once under its generic plan, and roll it back: the rows all its
    plan's nodes produced, over all their loops."""

    async def explain(conn: Connection) -> int:
        await conn.execute(f"PREPARE planned_once AS {query}")
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                values = ", ".join(_literal(a) for a in args)
                rows = await conn.fetch(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE planned_once({values})"
                )
                raise _RolledBack(msgspec.json.decode(rows[0][0])[0]["Plan"])
        except _RolledBack as done:
            plan = done.plan
        finally:
            await conn.execute("DEALLOCATE planned_once")
        return sum(n["Actual Rows"] * n["Actual Loops"] for n in _nodes(plan))

    return await db.run(explain)


class _RolledBack(Exception):
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan


async def test_each_planned_once_statement_costs_in_proportion_to_its_batch(
    db: Database,
) -> None:
    """A generic plan assumes a batch of ten; run on a few hundred, a plan that
    joins the batch with itself by a nested loop produces rows in the square of
    the batch (the record statement did: 183,000 rows for 300 outcomes),
    where one that finds each row by its key produces a few per row."""
    with trio.fail_after(60):
        account = await make_account(db)
        await make_contacts(db, BATCH)
        campaign = await make_campaign(db, account)
        await make_running(db, campaign)
        pending = await recipients.claim_batch(db, campaign, after_id=0, limit=BATCH, now=utc_now())
        ids = [r.id for r in pending]
        phone_number_id = await db.fetchval(
            "SELECT phone_number_id FROM accounts WHERE id = $1", account
        )
        now = utc_now()
        n = len(ids)
        produced = {
            "mark": await _produced(db, recipients.MARK_SENDING, campaign, ids, LEASE_OWNER, now),
            "mark groups": await _produced(
                db,
                recipients.MARK_SENDING_GROUPS,
                [campaign] * n,
                ids,
                [now] * n,
                LEASE_OWNER,
                [campaign],
            ),
        }
        await recipients.mark_sending(db, campaign, ids, lease_owner=LEASE_OWNER, now=now)
        produced["record"] = await _produced(
            db,
            recipients._RECORD_OUTCOMES,
            ids,
            ["sent"] * n,
            [1] * n,
            [f"wamid.{i}" for i in ids],
            [None] * n,
            [None] * n,
            [None] * n,
            now,
            [False] * n,
            [False] * n,
        )
        await recipients.record_outcomes(
            db, [Outcome(i, "sent", 1, provider_message_id=f"wamid.{i}") for i in ids], now=now
        )
        produced["apply"] = await _produced(
            db,
            statuses._APPLY_STATUSES,
            [None] * n,
            [f"wamid.{i}" for i in ids],
            ["delivered"] * n,
            [now] * n,
            [None] * n,
            [None] * n,
            [phone_number_id] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            [None] * n,
        )
    assert n == BATCH
    for name, rows in produced.items():
        # Linear: each row passes through a few dozen nodes at most.
        assert rows <= 40 * n, (name, rows)
    # The statements did their work (rolled back): the rows are as recorded.
    delivered = [
        StatusUpdate(None, f"wamid.{i}", "delivered", now, phone_number_id=phone_number_id)
        for i in ids[:5]
    ]
    applied = await statuses.apply_status_updates(db, delivered)
    assert applied.matched == 5


_PLANS = planned_once("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")


async def test_the_daemons_database_plans_them_once_and_everything_else_for_its_values(
    aio_loop: object, database_url: str
) -> None:
    with trio.fail_after(60):
        # One connection a pool: the one that ran the statements answers for them.
        async with open_database(database_url, min_size=1, max_size=1) as db:
            await make_contacts(db, 20)
            campaign_ids = []
            for _ in range(2):
                account = await make_account(db)
                campaign_ids.append(await make_campaign(db, account))
            for campaign in campaign_ids:
                await make_running(db, campaign)
            for campaign in campaign_ids:
                pending = await recipients.claim_batch(
                    db, campaign, after_id=0, limit=20, now=utc_now()
                )
                for group in (pending[:5], pending[5:]):
                    marked = await recipients.mark_sending(
                        db, campaign, [r.id for r in group], lease_owner=LEASE_OWNER, now=utc_now()
                    )
                    await recipients.record_outcomes(
                        db, [Outcome(i, "sent", 1) for i in marked], now=utc_now()
                    )
            planned_once_plans = await db.fetch(_PLANS)
            # Not the same text as _PLANS: a statement is known by its text.
            other_plans = await db.fetch(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements p"
            )

    def plans(rows: list[Any], statement: str) -> tuple[int, int]:
        found = [r for r in rows if _words(r["statement"]) == _words(statement)]
        assert len(found) == 1, statement
        return found[0]["generic_plans"], found[0]["custom_plans"]

    assert plans(planned_once_plans, recipients.MARK_SENDING) == (4, 0)
    assert plans(planned_once_plans, recipients._RECORD_OUTCOMES) == (4, 0)
    claim = [r for r in other_plans if "FROM campaign_recipients" in r["statement"]]
    assert claim and all(r["generic_plans"] == 0 and r["custom_plans"] >= 1 for r in claim)
    assert not any(_words(r["statement"]) == _words(recipients.MARK_SENDING) for r in other_plans)


def _words(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()
