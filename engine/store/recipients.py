"""Set-based operations on campaign recipients: one statement per logical step.

The recipient state machine (docs/delivery-guarantees.md):

    pending → sending → sent → delivered → read
                      ↘ failed, in_doubt (the daemon died mid-request)

Only `mark_sending` moves rows out of `pending` for a send, and only the ids it
returns may be sent: that is what makes a send happen at most once, even with
two daemons racing for one campaign.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from engine.core import ab_split
from engine.core.metrics import CampaignStats
from engine.messages import Outcome
from engine.store.database import Connection, Database, Record


class PendingRecipient(msgspec.Struct, frozen=True, gc=False):
    # gc=False: a daemon holds a batch or two of these per running campaign (200,000
    # at 1,000 campaigns), and the cyclic collector walked every one of them on each
    # full pass. They hold no reference back to anything, so they are never in a cycle.
    id: int
    phone: str
    variables: dict[str, str]
    attempts: int = 0  # requests made for it so far
    requeues: int = 0
    deferrals: int = 0
    variant: int | None = None  # index of its A/B variant (engine/core/ab_split.py)


_MATERIALISE = """
WITH c AS (
    SELECT id, owner_id, audience_type, audience_config FROM campaigns WHERE id = $1
), audience_filter AS (
    -- A segment is resolved to the same shape as an inline audience: tags and ids.
    SELECT
        CASE c.audience_type
            WHEN 'tags' THEN c.audience_config -> 'tags'
            WHEN 'segment' THEN (SELECT s.filter -> 'tags' FROM segments s
                                  WHERE s.id = (c.audience_config ->> 'segmentId')::uuid
                                    AND s.owner_id = c.owner_id)
        END AS tags,
        CASE c.audience_type
            WHEN 'contacts' THEN c.audience_config -> 'contactIds'
            WHEN 'segment' THEN (SELECT s.filter -> 'contactIds' FROM segments s
                                  WHERE s.id = (c.audience_config ->> 'segmentId')::uuid
                                    AND s.owner_id = c.owner_id)
        END AS contact_ids,
        c.audience_type = 'all' AS everyone,
        c.owner_id
    FROM c
)
INSERT INTO campaign_recipients (campaign_id, contact_id, phone, variables, variant, not_before)
SELECT $1, k.id, k.phone,
       jsonb_strip_nulls(k.attributes || jsonb_build_object(
           'firstName', k.first_name, 'lastName', k.last_name,
           'name', nullif(trim(concat_ws(' ', k.first_name, k.last_name)), ''),
           'phone', k.phone, 'email', k.email, 'company', k.company)),
       -- A/B variants: engine.core.ab_split.variant_at over the same point ($2: the
       -- cut points, NULL without variants; $3: the sample's end). Outside the
       -- sample a recipient waits for the winner ($4, far ahead, until it is chosen).
       CASE WHEN p.point < $3 THEN width_bucket(p.point, $2::bigint[]) - 1 END,
       CASE WHEN p.point >= $3 THEN $4::timestamptz END
FROM contacts k CROSS JOIN audience_filter f
CROSS JOIN LATERAL (
    SELECT CASE WHEN $2::bigint[] IS NULL THEN NULL
                ELSE ('x' || left(md5($1::text || ':' || k.id::text), 13))::bit(52)::bigint
           END AS point
) p
WHERE k.owner_id = f.owner_id
  AND NOT k.opted_out
  AND (f.everyone
       OR k.tags && ARRAY(SELECT jsonb_array_elements_text(coalesce(f.tags, '[]')))
       OR k.id = ANY(ARRAY(SELECT jsonb_array_elements_text(coalesce(f.contact_ids, '[]'))::uuid)))
ORDER BY k.id
ON CONFLICT (campaign_id, phone) DO NOTHING
"""


# Freezing sets these on the campaign row, after its recipients were inserted by an
# earlier statement of the same transaction (a statement does not see its own insert).
FREEZE_COLUMNS = """recipients_frozen = true,
    total_recipients = (SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1),
    ab_sample_size = CASE WHEN ab_test IS NOT NULL THEN (
        SELECT count(*) FROM campaign_recipients
        WHERE campaign_id = $1 AND variant IS NOT NULL) END"""

# A common table expression for the freezing statement: a campaign has its counters
# row from its creation; this covers one created before they existed.
ENSURE_COUNTERS = """counters AS (
    INSERT INTO campaign_counters (campaign_id) VALUES ($1) ON CONFLICT DO NOTHING)"""


async def insert_audience_in(conn: Connection, campaign: Record) -> None:
    """Insert the audience of a locked campaigns row as its recipients, unless it is
    frozen already: the first statement of freezing (then FREEZE_COLUMNS)."""
    if not campaign["recipients_frozen"]:
        cuts, sample_end = _split(campaign["variants"], campaign["ab_test"])
        await conn.execute(_MATERIALISE, campaign["id"], cuts, sample_end, HELD_FOR_WINNER)


async def _materialise(conn: Connection, campaign_id: str) -> int:
    campaign = await conn.fetchrow(
        "SELECT id, recipients_frozen, variants, ab_test FROM campaigns WHERE id = $1 FOR UPDATE",
        campaign_id,
    )
    if campaign is None:
        raise LookupError(f"campaign {campaign_id} does not exist")
    await insert_audience_in(conn, campaign)
    total: int = await conn.fetchval(
        f"WITH {ENSURE_COUNTERS} UPDATE campaigns SET {FREEZE_COLUMNS}"
        " WHERE id = $1 RETURNING total_recipients",
        campaign_id,
    )
    return total


# An A/B test's recipients outside its sample wait `pending` with this not_before
# until the winner is chosen (engine/store/variants.py): the dispatcher skips them.
HELD_FOR_WINNER = datetime(9000, 1, 1, tzinfo=UTC)


def _split(variants: list[dict[str, Any]], ab_test: dict[str, Any] | None) -> tuple[Any, int]:
    """The cut points and the sample's end of engine.core.ab_split (None: no variants)."""
    if not variants:
        return None, ab_split.POINTS
    end = ab_split.sample_cut(ab_test["sampleShare"] if ab_test else None)
    return ab_split.cut_points([float(v["weight"]) for v in variants], end), end


async def materialise_recipients(db: Database, campaign_id: str) -> int:
    """Freeze the campaign's audience into recipients; returns the total. Idempotent:
    the audience is read once, the first time, and never again."""
    return await db.transaction(_materialise, campaign_id)


async def materialise_in(conn: Connection, campaign_id: str) -> int:
    """`materialise_recipients` inside a transaction the caller already holds."""
    return await _materialise(conn, campaign_id)


# A claimed batch is held in memory until it is sent: whatever the contacts hold,
# it stops at this many bytes of variables (always at least one recipient).
BATCH_BYTES = 4 << 20


async def claim_batch(
    db: Database, campaign_id: str, *, after_id: int, limit: int, now: datetime
) -> list[PendingRecipient]:
    """The next pending recipients after the cursor, in id order, at most `limit` and
    about BATCH_BYTES of variables. Reading claims nothing in the database: a row is
    only taken by `mark_sending`."""
    rows = await db.fetch(
        """SELECT id, phone, variables, attempts, requeues, deferrals, variant FROM (
               -- The running sum over the limited rows only (a window over the
               -- whole WHERE would read every pending row of the campaign).
               SELECT *, sum(size) OVER (ORDER BY id) AS running FROM (
                   SELECT id, phone, variables, attempts, requeues, deferrals, variant,
                          octet_length(variables::text) AS size
                   FROM campaign_recipients
                   WHERE campaign_id = $1 AND status = 'pending' AND id > $2
                     AND (not_before IS NULL OR not_before <= $4)
                   ORDER BY id LIMIT $3
               ) limited
           ) batch
           WHERE running - size < $5
           ORDER BY id""",
        campaign_id,
        after_id,
        limit,
        now,
        BATCH_BYTES,
    )
    return [
        PendingRecipient(
            r["id"],
            r["phone"],
            r["variables"],
            r["attempts"],
            r["requeues"],
            r["deferrals"],
            variant=r["variant"],
        )
        for r in rows
    ]


async def next_requeued_at(db: Database, campaign_id: str) -> datetime | None:
    """When the earliest requeued recipient becomes sendable again (None: none waits)."""
    moment: datetime | None = await db.fetchval(
        """SELECT min(not_before) FROM campaign_recipients
           WHERE campaign_id = $1 AND status = 'pending' AND not_before IS NOT NULL""",
        campaign_id,
    )
    return moment


async def defer(
    db: Database, ids: Sequence[int], not_before: Sequence[datetime], *, reason: str
) -> None:
    """Leave pending recipients waiting until their own `not_before`, for `reason`
    (`send_window`, `messaging_limit`): one statement for a batch."""
    await db.execute(
        """UPDATE campaign_recipients x SET not_before = w.not_before, deferred_reason = $3
           FROM unnest($1::bigint[], $2::timestamptz[]) AS w(id, not_before)
           WHERE x.id = w.id AND x.status = 'pending'""",
        list(ids),
        list(not_before),
        reason,
    )


# Marking (`mark_sending`); a module constant so a test can ask PostgreSQL for its plan.
MARK_SENDING = """WITH live AS (
        SELECT c.id FROM campaigns c
        JOIN campaign_leases l ON l.campaign_id = c.id AND l.owner = $3
        WHERE c.id = $1 AND c.status = 'running'
        FOR SHARE OF c
    ), taken AS (
        -- One primary-key lookup per wanted id, whatever the statistics say:
        -- a subquery that locks is never flattened, so the planner cannot
        -- turn this into a scan of the campaign's pending rows (it did, with
        -- statistics from before the recipients were materialised: 25 ms
        -- for 5 rows). Rows in id order, and none another marker holds:
        -- concurrent batch statements never deadlock.
        SELECT x.id
        FROM (SELECT id FROM unnest($2::bigint[]) AS w(id) ORDER BY id) AS wanted
        CROSS JOIN LATERAL (
            SELECT r.id FROM campaign_recipients r
            WHERE r.id = wanted.id AND r.campaign_id = $1 AND r.status = 'pending'
              AND EXISTS (SELECT 1 FROM live)
            FOR UPDATE OF r SKIP LOCKED
        ) AS x
    )
    UPDATE campaign_recipients r SET status = 'sending', sending_at = $4,
           deferred_reason = NULL
    FROM taken WHERE r.id = taken.id
    RETURNING r.id"""


async def mark_sending(
    db: Database, campaign_id: str, recipient_ids: Sequence[int], *, lease_owner: str, now: datetime
) -> list[int]:
    """Move recipients from `pending` to `sending`, durably, just before sending them.

    Only the returned ids may be sent. The campaign row is read FOR SHARE, so a
    pause, cancel or lease loss committed before this statement leaves nothing to
    send, and one committed after it waits for it: "no send starts after a pause
    is accepted" holds across daemons.
    """
    rows = await db.fetch(
        MARK_SENDING,
        campaign_id,
        list(recipient_ids),
        lease_owner,
        now,
    )
    return [r["id"] for r in rows]


class MarkGroup(msgspec.Struct, frozen=True):
    """One campaign's group for `mark_sending_groups`."""

    campaign_id: str
    recipient_ids: list[int]
    now: datetime  # its `sending_at`


# `mark_sending` for the groups of many campaigns: the same checks, per campaign.
MARK_SENDING_GROUPS = """WITH live AS MATERIALIZED (
        -- Each campaign row FOR SHARE, as in MARK_SENDING, but one that another
        -- transaction holds (a pause, an edit under way) is skipped rather than
        -- waited for: it is answered as busy, and only its group waits for it
        -- (marked alone), never the other campaigns' (and no lock order between
        -- campaigns can deadlock this statement). The anti-join below reads
        -- every row of this CTE.
        SELECT c.id FROM campaigns c
        JOIN campaign_leases l ON l.campaign_id = c.id AND l.owner = $4
        WHERE c.id = ANY($5::uuid[]) AND c.status = 'running'
        FOR SHARE OF c SKIP LOCKED
    ), wanted AS MATERIALIZED (
        SELECT w.campaign_id, w.id, w.at
        FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS w(campaign_id, id, at)
        JOIN live ON live.id = w.campaign_id
    ), taken AS (
        -- As in MARK_SENDING: one primary-key lookup per wanted id, in id order,
        -- skipping rows another marker holds.
        SELECT x.id, wanted.at
        FROM (SELECT * FROM wanted ORDER BY id) AS wanted
        CROSS JOIN LATERAL (
            SELECT r.id FROM campaign_recipients r
            WHERE r.id = wanted.id AND r.campaign_id = wanted.campaign_id
              AND r.status = 'pending'
            FOR UPDATE OF r SKIP LOCKED
        ) AS x
    ), marked AS (
        UPDATE campaign_recipients r SET status = 'sending', sending_at = taken.at,
               deferred_reason = NULL
        FROM taken WHERE r.id = taken.id
        RETURNING r.id
    )
    SELECT id, NULL::uuid AS busy FROM marked
    UNION ALL
    -- Running and ours as this statement saw them, yet not locked: held by another.
    SELECT NULL, c.id FROM campaigns c
    JOIN campaign_leases l ON l.campaign_id = c.id AND l.owner = $4
    WHERE c.id = ANY($5::uuid[]) AND c.status = 'running'
      AND c.id NOT IN (SELECT id FROM live)"""


class MarkedGroups(msgspec.Struct, frozen=True):
    marked: list[list[int]]  # for each group, in order, the ids marked
    # Campaigns whose row another transaction held: their groups marked nothing,
    # and must be marked alone (`mark_sending` waits for that transaction).
    busy: frozenset[str]


async def mark_sending_groups(
    db: Database, groups: Sequence[MarkGroup], *, lease_owner: str
) -> MarkedGroups:
    """`mark_sending` for several campaigns' groups in one statement. A group of a
    campaign that is not running or not `lease_owner`'s marks nothing; the others
    are marked all the same."""
    if len(groups) == 1:
        # One campaign: the plain statement (planned in a fraction of the time),
        # which waits for a transaction holding its row; one row cannot deadlock.
        only = groups[0]
        alone = await mark_sending(
            db, only.campaign_id, only.recipient_ids, lease_owner=lease_owner, now=only.now
        )
        return MarkedGroups(marked=[alone], busy=frozenset())
    campaign_ids: list[str] = []
    ids: list[int] = []
    moments: list[datetime] = []
    for group in groups:
        campaign_ids.extend([group.campaign_id] * len(group.recipient_ids))
        ids.extend(group.recipient_ids)
        moments.extend([group.now] * len(group.recipient_ids))
    rows = await db.fetch(
        MARK_SENDING_GROUPS,
        campaign_ids,
        ids,
        moments,
        lease_owner,
        list({g.campaign_id for g in groups}),
    )
    marked = {r["id"] for r in rows if r["id"] is not None}
    return MarkedGroups(
        marked=[[i for i in g.recipient_ids if i in marked] for g in groups],
        busy=frozenset(str(r["busy"]) for r in rows if r["busy"] is not None),
    )


class StoredOutcomes(msgspec.Struct, frozen=True):
    changed: int  # rows the batch changed
    # Each touched campaign's counts just after this batch, read in the same
    # crossing: progress events need the counts at their own batch, and the
    # recorder may store the next batch before an actor reads them.
    stats: dict[str, CampaignStats]


_RECORD_OUTCOMES = """UPDATE campaign_recipients r SET
               status = CASE
                   WHEN o.status = 'sent' AND r.status IN ('pending', 'sending', 'in_doubt') THEN 'sent'
                   WHEN o.status = 'sent' THEN r.status
                   WHEN o.status = 'in_doubt' AND r.status <> 'sending' THEN r.status
                   ELSE o.status END,
               attempts = r.attempts + o.attempts,
               requeues = r.requeues + o.requeued::int,
               deferrals = r.deferrals + o.deferred::int,
               sent_at = CASE WHEN o.status = 'sent' THEN coalesce(r.sent_at, $8) ELSE r.sent_at END,
               failed_at = CASE WHEN o.status = 'failed' THEN $8 ELSE r.failed_at END,
               provider_message_id = coalesce(r.provider_message_id, o.provider_message_id),
               error_code = CASE WHEN o.status = 'sent' THEN r.error_code ELSE o.error_code END,
               error_message = CASE WHEN o.status = 'sent' THEN r.error_message ELSE o.error_message END,
               not_before = o.not_before
           FROM (
               -- Each outcome with its row locked, in id order: the webhook applier
               -- updates the same rows concurrently. The outcome rides along with its
               -- lock: joined to the locked rows instead, the batch took ~10 ms to
               -- plan (planned at each execution), and 2-4 times the CPU per outcome
               -- at 150-300 outcomes (benchmarks/README.md, commit 1fe61c1).
               SELECT o.* FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[],
                                      $5::text[], $6::text[], $7::timestamptz[],
                                      $9::bool[], $10::bool[])
                    AS o(id, status, attempts, provider_message_id, error_code,
                         error_message, not_before, requeued, deferred)
               JOIN campaign_recipients x ON x.id = o.id
               ORDER BY x.id FOR UPDATE OF x
           ) AS o
           WHERE r.id = o.id
             AND (r.status IN ('sending', 'in_doubt') OR (o.status = 'sent' AND r.status <> 'pending'))
           RETURNING r.campaign_id"""

_COUNTERS_OF = """SELECT campaign_id, pending, sent, delivered, read, replied, failed, in_doubt,
    clicked
    FROM campaign_counters WHERE campaign_id = ANY($1::uuid[])"""


async def _record(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> StoredOutcomes:
    # Two statements on one connection, no transaction (each round trip costs the
    # daemon CPU); the counters read are those just after the update, or newer.
    rows = await conn.fetch(
        _RECORD_OUTCOMES,
        [o.recipient_id for o in outcomes],
        [o.status for o in outcomes],
        [o.attempts for o in outcomes],
        [o.provider_message_id for o in outcomes],
        [o.error_code for o in outcomes],
        [o.error_message for o in outcomes],
        [o.not_before for o in outcomes],
        now,
        [o.requeued for o in outcomes],
        [o.deferred for o in outcomes],
    )
    campaign_ids = list({r["campaign_id"] for r in rows})
    counters = await conn.fetch(_COUNTERS_OF, campaign_ids) if campaign_ids else []
    return StoredOutcomes(
        changed=len(rows),
        stats={
            str(c["campaign_id"]): CampaignStats(
                **{k: int(v) for k, v in c.items() if k != "campaign_id"}
            )
            for c in counters
        },
    )


async def record_outcomes(
    db: Database, outcomes: Sequence[Outcome], *, now: datetime
) -> StoredOutcomes:
    """Store a batch of send results in one statement (and read the counters it
    moved, in the same crossing).

    A status webhook may have overtaken the answer (the row is already
    `delivered`): the status then never moves backwards. `pending` puts a
    recipient back (a retry, a requeue, or a send that never started) with the
    earliest time it may go again; `in_doubt` keeps `sending_at` for the
    in-doubt timeout.
    """
    if not outcomes:
        return StoredOutcomes(0, {})
    return await db.run(_record, outcomes, now)


async def campaign_stats(db: Database, campaign_id: str) -> CampaignStats:
    row = await db.fetchrow(
        """SELECT pending, sent, delivered, read, replied, failed, in_doubt, clicked
           FROM campaign_counters WHERE campaign_id = $1""",
        campaign_id,
    )
    if row is None:
        return CampaignStats()
    return CampaignStats(**{k: int(v) for k, v in row.items()})


async def count_by_status(db: Database, campaign_id: str) -> dict[str, int]:
    """Exact counts by scanning the rows (for checks; the counters serve the hot path)."""
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM campaign_recipients WHERE campaign_id = $1 GROUP BY status",
        campaign_id,
    )
    return {r["status"]: int(r["n"]) for r in rows}


class Unfinished(msgspec.Struct, frozen=True):
    pending: int = 0
    sending: int = 0
    in_doubt: int = 0


async def unfinished(db: Database, campaign_id: str) -> Unfinished:
    """How many of a campaign's recipients are not final yet, by state (run at the
    end of a dispatch pass, not per batch)."""
    rows = await db.fetch(
        """SELECT status, count(*) AS n FROM campaign_recipients
           WHERE campaign_id = $1 AND status IN ('pending', 'sending', 'in_doubt')
           GROUP BY status""",
        campaign_id,
    )
    return Unfinished(**{r["status"]: int(r["n"]) for r in rows})


async def mark_abandoned_in_doubt(db: Database, campaign_id: str) -> int:
    """A dead owner's `sending` rows: the request may or may not have left. They
    are never resent blindly; a webhook or the in-doubt timeout resolves them."""
    status = await db.execute(
        "UPDATE campaign_recipients SET status = 'in_doubt' WHERE campaign_id = $1 AND status = 'sending'",
        campaign_id,
    )
    return int(status.rsplit(" ", 1)[1])


async def next_in_doubt_since(db: Database, campaign_id: str) -> datetime | None:
    moment: datetime | None = await db.fetchval(
        """SELECT min(sending_at) FROM campaign_recipients
           WHERE campaign_id = $1 AND status = 'in_doubt'""",
        campaign_id,
    )
    return moment


async def expire_in_doubt(
    db: Database, campaign_id: str, *, cutoff: datetime, resend: bool, now: datetime
) -> int:
    """Resolve in-doubt rows sent at or before the cutoff: fail them (`outcome_unknown`),
    or, when the operator chose it, put them back to `pending` to be sent again.

    At or before: the campaign actor wakes exactly at `sending_at + timeout`; with a
    strict comparison nothing would expire then, and it would wait again for that
    same instant, spinning until the clock ticks (forever on a mock clock)."""
    if resend:
        query = """UPDATE campaign_recipients SET status = 'pending', not_before = NULL
                   WHERE campaign_id = $1 AND status = 'in_doubt' AND sending_at <= $2"""
        status = await db.execute(query, campaign_id, cutoff)
    else:
        query = """UPDATE campaign_recipients SET status = 'failed', failed_at = $3,
                       error_code = 'outcome_unknown',
                       error_message = 'The daemon stopped before the answer to this send was stored'
                   WHERE campaign_id = $1 AND status = 'in_doubt' AND sending_at <= $2"""
        status = await db.execute(query, campaign_id, cutoff, now)
    return int(status.rsplit(" ", 1)[1])
