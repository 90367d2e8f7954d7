"""Campaign leases: which daemon owns a running campaign, until when.

Only the owner may mark recipients `sending` (see `recipients.mark_sending`,
which checks the lease owner in the same statement), so a daemon that lost its
lease cannot send even if it has not noticed yet.

Every lease time is PostgreSQL's own (`now()` in the statements), never a
daemon's clock: two daemons whose clocks disagree still agree on when a lease
expires. Callers pass durations only.

A lease is taken over when it expires, or earlier when its owner is gone. Each
daemon registers the server session of its dedicated LISTEN connection in
`daemon_presence` (backend pid and start time); a process that dies loses that
session at once. A claimer that finds the session gone notes when
(`missing_since`), and takes the daemon's leases once it has stayed gone for
`PRESENCE_GRACE_SECONDS`: a live daemon whose session was merely cut (a
terminated backend, a blip) listens and registers again well within that.

After a PostgreSQL restart every session is gone at once, live daemons'
included. Taking over then would still be safe, because marking is fenced by the
lease: the old owner's next `mark_sending` returns nothing, and the sends it has
in flight were marked `sending`, so the new owner turns them `in_doubt` instead
of sending them again, and the old owner's late outcomes still resolve them.
It would only move campaigns between healthy daemons for nothing, so no early
takeover happens until `RESTART_GRACE_SECONDS` after the server started; a
daemon that really died during the restart loses its leases then (or at expiry,
whichever is first).

A live owner cut off from the database without its session ending (a network
partition the server has not noticed) keeps its leases until they expire.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from engine.store.database import Database

PRESENCE_GRACE_SECONDS = 1.0
RESTART_GRACE_SECONDS = 10.0
# While other daemons hold leases, a claimer looks this often for ones that died.
PRESENCE_POLL_SECONDS = 1.0

# A presence whose session no longer exists. pg_stat_activity hides backend_start
# of other roles' sessions (NULL): the pid alone decides then.
_SESSION_GONE = """NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.pid = p.backend_pid AND coalesce(a.backend_start = p.backend_start, true))"""

_ABANDONED_OWNERS = f"""SELECT p.instance_id FROM daemon_presence p
    WHERE p.missing_since <= now() - make_interval(secs => {PRESENCE_GRACE_SECONDS})
      AND pg_postmaster_start_time() <= now() - make_interval(secs => {RESTART_GRACE_SECONDS})
      AND {_SESSION_GONE}"""


async def runs_here(db: Database, campaign_id: str, *, lease_owner: str) -> bool:
    """Still `running`, and still this daemon's to run."""
    owned: bool | None = await db.fetchval(
        """SELECT true FROM campaigns c
           JOIN campaign_leases l ON l.campaign_id = c.id AND l.owner = $2
           WHERE c.id = $1 AND c.status = 'running'""",
        campaign_id,
        lease_owner,
    )
    return bool(owned)


async def try_acquire_lease(db: Database, campaign_id: str, *, owner: str, ttl: float) -> bool:
    """Take (or extend) the lease for `ttl` seconds: free, ours already, expired,
    or held by a daemon that is gone."""
    row = await db.fetchrow(
        f"""INSERT INTO campaign_leases (campaign_id, owner, expires_at)
            VALUES ($1, $2, now() + make_interval(secs => $3))
            ON CONFLICT (campaign_id) DO UPDATE
               SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE campaign_leases.expires_at < now()
                OR campaign_leases.owner = excluded.owner
                OR campaign_leases.owner IN ({_ABANDONED_OWNERS})
            RETURNING owner""",
        campaign_id,
        owner,
        ttl,
    )
    return row is not None


async def renew_leases(
    db: Database, campaign_ids: Sequence[str], *, owner: str, ttl: float
) -> set[str]:
    """Extend our leases to `ttl` seconds from now; returns the campaigns still ours.

    A lease that expired but that nobody took is still ours: only another owner
    fences us out, expiry merely allows one."""
    rows = await db.fetch(
        """UPDATE campaign_leases SET expires_at = now() + make_interval(secs => $3)
           WHERE campaign_id = ANY($1::uuid[]) AND owner = $2 RETURNING campaign_id""",
        list(campaign_ids),
        owner,
        ttl,
    )
    return {str(r["campaign_id"]) for r in rows}


async def release_lease(db: Database, campaign_id: str, *, owner: str) -> None:
    await db.execute(
        "DELETE FROM campaign_leases WHERE campaign_id = $1 AND owner = $2", campaign_id, owner
    )


async def claimable_campaigns(
    db: Database, *, now: datetime, owner: str, limit: int, exclude: Sequence[str]
) -> list[str]:
    """Campaigns due to run that no live daemon runs: scheduled ones whose time has
    come (`now` is the engine's clock, as `scheduled_at` is), running ones whose
    owner's lease expired or whose owner is gone, and ones leased to `owner`
    itself but not in `exclude` (its actor ended, or it never started)."""
    rows = await db.fetch(
        f"""SELECT c.id FROM campaigns c
            LEFT JOIN campaign_leases l ON l.campaign_id = c.id
            WHERE ((c.status = 'scheduled' AND c.scheduled_at <= $1) OR c.status = 'running')
              AND (l.campaign_id IS NULL OR l.expires_at < now() OR l.owner = $4
                   OR l.owner IN ({_ABANDONED_OWNERS}))
              AND NOT (c.id = ANY($3::uuid[]))
            ORDER BY c.status = 'running' DESC, c.scheduled_at
            LIMIT $2""",
        now,
        limit,
        list(exclude),
        owner,
    )
    return [str(r["id"]) for r in rows]


class WakeUp(msgspec.Struct, frozen=True):
    """When the supervisor should look again, from the database's point of view."""

    next_scheduled_at: datetime | None  # engine clock, as scheduled_at
    seconds_to_lease_event: float | None  # a lease expiry or an owner's grace ending
    others_hold_leases: bool  # then poll for owners that die (PRESENCE_POLL_SECONDS)


async def next_wake_up(db: Database, *, now: datetime, owner: str) -> WakeUp:
    """The next moment something becomes claimable: a scheduled time, another
    daemon's lease expiry, or the end of a gone daemon's grace."""
    row = await db.fetchrow(
        f"""SELECT
               (SELECT min(scheduled_at) FROM campaigns
                 WHERE status = 'scheduled' AND scheduled_at > $1) AS next_scheduled_at,
               (SELECT extract(epoch FROM min(e.at) - now())::float8 FROM (
                    SELECT l.expires_at AS at FROM campaign_leases l
                      JOIN campaigns c ON c.id = l.campaign_id
                     WHERE c.status IN ('running', 'scheduled') AND l.owner <> $2
                    UNION ALL
                    SELECT greatest(
                               p.missing_since + make_interval(secs => {PRESENCE_GRACE_SECONDS}),
                               pg_postmaster_start_time()
                                   + make_interval(secs => {RESTART_GRACE_SECONDS}))
                      FROM daemon_presence p
                     WHERE p.missing_since IS NOT NULL AND p.instance_id <> $2
                       AND EXISTS (SELECT 1 FROM campaign_leases l WHERE l.owner = p.instance_id)
                ) e WHERE e.at > now()) AS seconds_to_lease_event,
               EXISTS (SELECT 1 FROM campaign_leases WHERE owner <> $2) AS others_hold_leases""",
        now,
        owner,
    )
    assert row is not None
    return WakeUp(
        row["next_scheduled_at"], row["seconds_to_lease_event"], row["others_hold_leases"]
    )


# --- presence ----------------------------------------------------------------------------


async def register_presence(
    db: Database, instance_id: str, *, backend_pid: int, backend_start: datetime
) -> None:
    """This daemon is alive as long as that server session is: call after each
    (re)connection of its dedicated connection."""
    await db.execute(
        """INSERT INTO daemon_presence (instance_id, backend_pid, backend_start)
           VALUES ($1, $2, $3)
           ON CONFLICT (instance_id) DO UPDATE
              SET backend_pid = excluded.backend_pid, backend_start = excluded.backend_start,
                  registered_at = now(), missing_since = NULL""",
        instance_id,
        backend_pid,
        backend_start,
    )


async def unregister_presence(db: Database, instance_id: str) -> None:
    await db.execute("DELETE FROM daemon_presence WHERE instance_id = $1", instance_id)


async def note_missing_daemons(db: Database) -> int:
    """Start the grace of every daemon whose session is gone; forget long-gone ones
    that hold no lease. Returns how many went missing just now."""
    status = await db.execute(
        f"""WITH forgotten AS (
               DELETE FROM daemon_presence p
                WHERE p.missing_since < now() - interval '1 hour'
                  AND NOT EXISTS (SELECT 1 FROM campaign_leases l WHERE l.owner = p.instance_id)
            )
            UPDATE daemon_presence p SET missing_since = now()
             WHERE p.missing_since IS NULL AND {_SESSION_GONE}"""
    )
    return int(status.rsplit(" ", 1)[1])
