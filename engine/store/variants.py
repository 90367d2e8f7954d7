"""A/B variants in PostgreSQL: each variant's counts, and the sample-then-winner
test's two durable steps (the sample was sent; the winner was chosen).

Counts per variant are an aggregate over the campaign's recipients (one scan of
its rows by the `campaign_id` indexes: 40 to 60 ms per 100,000 recipients, measured
on a busy 2-core machine), read for a campaign's detail and once for the decision,
never on the send path. The campaign-wide counters stay those of the triggers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from engine.core.ab_winner import Decision
from engine.core.metrics import CampaignStats
from engine.store.database import Connection, Database, Record


class VariantCounts(msgspec.Struct, frozen=True):
    recipients: int  # assigned to the variant (an A/B test's rest only once decided)
    stats: CampaignStats


# As the counter triggers count (engine/store/migrations/0009_tracked_links.sql).
_COUNTS = """SELECT variant, count(*) AS recipients,
       count(*) FILTER (WHERE status IN ('pending', 'sending')) AS pending,
       count(sent_at) AS sent, count(delivered_at) AS delivered, count(read_at) AS read,
       count(replied_at) AS replied, count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'in_doubt') AS in_doubt, count(clicked_at) AS clicked
    FROM campaign_recipients WHERE campaign_id = $1 AND variant IS NOT NULL
    GROUP BY variant"""


async def counts_in(conn: Connection, campaign_id: str, variants: int) -> list[VariantCounts]:
    """Each of the campaign's `variants` (their number) in order, with its counts."""
    rows = {r["variant"]: r for r in await conn.fetch(_COUNTS, campaign_id)}
    counts = []
    for index in range(variants):
        row = rows.get(index)
        if row is None:
            counts.append(VariantCounts(0, CampaignStats()))
            continue
        stats = {k: int(v) for k, v in row.items() if k not in ("variant", "recipients")}
        counts.append(VariantCounts(int(row["recipients"]), CampaignStats(**stats)))
    return counts


async def sample_sent(db: Database, campaign_id: str, decide_at: datetime) -> datetime:
    """Record that the sample is sent and the winner is due at `decide_at`; the first
    record stands (a daemon taking the campaign over keeps the same time)."""
    stored: datetime = await db.fetchval(
        """UPDATE campaigns SET ab_decide_at = coalesce(ab_decide_at, $2)
           WHERE id = $1 RETURNING ab_decide_at""",
        campaign_id,
        decide_at,
    )
    return stored


class Chosen(msgspec.Struct, frozen=True):
    winner: int
    values: list[float]
    decided_at: datetime
    now: bool  # decided by this call (False: it had been decided before)


async def _decide(
    conn: Connection,
    campaign_id: str,
    choose: Callable[[list[CampaignStats]], Decision],
    now: datetime,
) -> Chosen:
    row = await conn.fetchrow(
        """SELECT jsonb_array_length(variants) AS variants, ab_winner, ab_values, ab_decided_at
           FROM campaigns WHERE id = $1 FOR UPDATE""",
        campaign_id,
    )
    assert row is not None
    if row["ab_winner"] is not None:
        return Chosen(row["ab_winner"], row["ab_values"], row["ab_decided_at"], now=False)
    counts = await counts_in(conn, campaign_id, row["variants"])
    decision = choose([c.stats for c in counts])
    await conn.execute(
        """UPDATE campaigns SET ab_winner = $2, ab_values = $3, ab_decided_at = $4
           WHERE id = $1""",
        campaign_id,
        decision.winner,
        list(decision.values),
        now,
    )
    # The rest of the recipients get the winner and become sendable at once.
    await conn.execute(
        """UPDATE campaign_recipients SET variant = $2, not_before = NULL
           WHERE campaign_id = $1 AND variant IS NULL AND status = 'pending'""",
        campaign_id,
        decision.winner,
    )
    return Chosen(decision.winner, list(decision.values), now, now=True)


async def decide_winner(
    db: Database,
    campaign_id: str,
    choose: Callable[[list[CampaignStats]], Decision],
    *,
    now: datetime,
) -> Chosen:
    """Choose the winner from the sample's counts (`choose`, pure), store it and give
    it to the rest, in one transaction; a decision stored before is returned as it
    was, never made again."""
    return await db.transaction(_decide, campaign_id, choose, now)


async def counts_of_in(conn: Connection, row: Record) -> list[tuple[int, CampaignStats]] | None:
    """The counts `campaign_view.campaign_object` shows per variant of a campaigns row
    (None, and no query, for a campaign without variants)."""
    if not row["variants"]:
        return None
    counts = await counts_in(conn, str(row["id"]), len(row["variants"]))
    return [(c.recipients, c.stats) for c in counts]


async def counts_of(db: Database, row: Record) -> list[tuple[int, CampaignStats]] | None:
    """`counts_of_in` in a crossing of its own (none for a campaign without variants)."""
    if not row["variants"]:
        return None
    return await db.run(counts_of_in, row)
