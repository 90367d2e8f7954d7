"""Idempotency keys: claim a key before running a request, store its answer after.

Times are the database's `now()`, so daemons whose clocks disagree still agree on
when a key expires or a claim goes stale.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from engine.store.database import Connection, Database, Record

# Expired rows one claim deletes: bounded work per request, yet faster than keys
# are made, so the table stays near a day of keys without a full scan.
PURGE_LIMIT = 100

_PURGE = """DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_keys WHERE created_at < now() - $1::interval
    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))"""

# A new key is inserted; an expired row, or a claim nobody finished in time (its
# daemon died mid-request), is taken over; a live row is left alone.
_CLAIM = """INSERT INTO idempotency_keys (owner_id, key, fingerprint, claim_token)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (owner_id, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, claim_token = EXCLUDED.claim_token,
            status = NULL, content_type = NULL, body = NULL, created_at = now()
        WHERE idempotency_keys.created_at < now() - $5::interval
           OR (idempotency_keys.status IS NULL
               AND idempotency_keys.created_at < now() - $6::interval)
    RETURNING claim_token"""

_EXISTING = """SELECT fingerprint, status, content_type, body FROM idempotency_keys
    WHERE owner_id = $1 AND key = $2"""


async def _claim(
    conn: Connection,
    owner_id: str,
    key: str,
    fingerprint: bytes,
    token: uuid.UUID,
    ttl: timedelta,
    stale_after: timedelta,
) -> Record | None:
    await conn.execute(_PURGE, ttl, PURGE_LIMIT)
    for _attempt in range(3):
        if await conn.fetchval(_CLAIM, owner_id, key, fingerprint, token, ttl, stale_after):
            return None
        # Read committed: this sees the row that made the insert conflict, unless
        # its request released it meanwhile; then the next insert wins.
        existing: Record | None = await conn.fetchrow(_EXISTING, owner_id, key)
        if existing is not None:
            return existing
    raise RuntimeError(f"idempotency key {key!r} kept changing under a claim")


async def claim(
    db: Database,
    owner_id: str,
    key: str,
    fingerprint: bytes,
    token: uuid.UUID,
    *,
    ttl: timedelta,
    stale_after: timedelta,
) -> Record | None:
    """None when this request now holds the key (committed before returning, so
    other daemons see it); otherwise the live row: `fingerprint`, and `status`,
    `content_type`, `body` (status NULL while its request is still running)."""
    return await db.transaction(_claim, owner_id, key, fingerprint, token, ttl, stale_after)


async def finish(
    db: Database,
    owner_id: str,
    key: str,
    token: uuid.UUID,
    *,
    status: int,
    content_type: str | None,
    body: bytes,
) -> None:
    await db.execute(
        """UPDATE idempotency_keys SET status = $4, content_type = $5, body = $6
            WHERE owner_id = $1 AND key = $2 AND claim_token = $3 AND status IS NULL""",
        owner_id,
        key,
        token,
        status,
        content_type,
        body,
    )


async def release(db: Database, owner_id: str, key: str, token: uuid.UUID) -> None:
    """Forget an unfinished claim, so the client's retry runs the request again."""
    await db.execute(
        """DELETE FROM idempotency_keys
            WHERE owner_id = $1 AND key = $2 AND claim_token = $3 AND status IS NULL""",
        owner_id,
        key,
        token,
    )
