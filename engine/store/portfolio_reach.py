"""WhatsApp's messaging limit: unique users a portfolio reaches per moving 24 hours.

PostgreSQL holds the truth (`portfolio_reach`, migration 0012), so the count is
right across campaigns and daemons: each reservation is one statement, run under
the portfolio's advisory lock (`reserve_reach`). A portfolio without a limit
records nothing: its count starts when a limit is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from engine.store.database import Database

WINDOW = timedelta(hours=24)


class Deferred(msgspec.Struct, frozen=True):
    """Recipients of a batch left `pending` until `until` (the window's oldest
    reach expires then); `limited`: the portfolio has a limit at all."""

    ids: frozenset[int]
    until: datetime | None
    limited: bool


class WindowUse(msgspec.Struct, frozen=True):
    limit: int | None  # None: unlimited
    used: int
    resets_at: datetime | None  # when the oldest reach in the window expires


async def reserve(
    db: Database, account_id: str, ids: Sequence[int], phones: Sequence[str], *, now: datetime
) -> Deferred:
    """Reserve reach for recipients (in send order) of a campaign of `account_id`.
    Phones already reached in the window pass and count once; the rest pass while
    the window has room, and those that do not are deferred in the same statement."""
    row = await db.fetchrow(
        """SELECT p.messaging_limit, d.ids, d.until FROM portfolio_of($1) p,
               LATERAL (SELECT array_agg(x.id) AS ids, min(x.deferred_until) AS until
                        FROM reserve_reach($1, $2::bigint[], $3::text[], $4) x) d""",
        account_id,
        list(ids),
        list(phones),
        now,
    )
    if row is None:  # the account is gone
        return Deferred(frozenset(), None, False)
    return Deferred(frozenset(row["ids"] or ()), row["until"], row["messaging_limit"] is not None)


class Expiry(msgspec.Struct, frozen=True):
    """When one reach leaves the window; (at, phone) orders them."""

    at: datetime
    phone: str


async def expiries(
    db: Database, account_id: str, *, after: Expiry | None, count: int
) -> list[Expiry]:
    """The next `count` moments a reach of the account's portfolio expires, after
    `after` (None: from the oldest), oldest first."""
    rows = await db.fetch(
        """SELECT r.reached_at + interval '24 hours' AS at, r.phone
           FROM portfolio_of($1) p JOIN portfolio_reach r ON r.portfolio = p.key
           WHERE $2::timestamptz IS NULL
              OR (r.reached_at, r.phone) > ($2::timestamptz - interval '24 hours', $3::text)
           ORDER BY r.reached_at, r.phone LIMIT $4""",
        account_id,
        after.at if after else None,
        after.phone if after else None,
        count,
    )
    return [Expiry(r["at"], r["phone"]) for r in rows]


async def touch(db: Database, account_id: str, phones: Sequence[str], *, at: datetime) -> None:
    """The users were reached at `at` (their send's turn, a little after the
    reservation): the window counts them from then."""
    await db.execute(
        """UPDATE portfolio_reach r SET reached_at = greatest(r.reached_at, $3)
           FROM portfolio_of($1) p WHERE r.portfolio = p.key AND r.phone = ANY($2::text[])""",
        account_id,
        list(phones),
        at,
    )


async def window_use(db: Database, account_id: str, *, now: datetime) -> WindowUse:
    """How much of its portfolio's window the account's campaigns share now."""
    row = await db.fetchrow(
        """SELECT p.messaging_limit,
                  (SELECT count(*) FROM portfolio_reach r
                    WHERE r.portfolio = p.key AND r.reached_at > $2::timestamptz - interval '24 hours') AS used,
                  (SELECT min(r.reached_at) + interval '24 hours' FROM portfolio_reach r
                    WHERE r.portfolio = p.key AND r.reached_at > $2::timestamptz - interval '24 hours')
                      AS resets_at
           FROM portfolio_of($1) p""",
        account_id,
        now,
    )
    if row is None:
        return WindowUse(None, 0, None)
    return WindowUse(row["messaging_limit"], int(row["used"]), row["resets_at"])
