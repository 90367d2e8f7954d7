"""WhatsApp accounts of an owner."""

from __future__ import annotations

from typing import Any

from engine.messages import CommandKind
from engine.store import campaign_runs
from engine.store.database import Connection, Database, Record
from engine.store.errors import InUse, set_clause


async def create_account(
    db: Database,
    owner_id: str,
    *,
    name: str,
    phone_number_id: str,
    access_token: str,
    api_url: str | None = None,
    status: str = "connected",
    messages_per_second: int = 80,
    business_account_id: str | None = None,
    portfolio_id: str | None = None,
    messaging_limit: int | None = None,
) -> Record:
    row = await db.fetchrow(
        """INSERT INTO accounts (owner_id, name, phone_number_id, access_token, api_url, status,
                                 messages_per_second, business_account_id, portfolio_id,
                                 messaging_limit)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *""",
        owner_id,
        name,
        phone_number_id,
        access_token,
        api_url,
        status,
        messages_per_second,
        business_account_id,
        portfolio_id,
        messaging_limit,
    )
    assert row is not None
    return row


_ACCOUNT_COLUMNS = frozenset(
    {"name", "phone_number_id", "access_token", "api_url", "status", "messages_per_second"}
    | {"business_account_id"}
    # The messaging limit (migration 0012): read at each reservation, so a change
    # applies to running campaigns from their next batch.
    | {"portfolio_id", "messaging_limit"}
)


async def list_accounts(
    db: Database, owner_id: str, *, after: str | None, limit: int
) -> list[Record]:
    return await db.fetch(
        """SELECT * FROM accounts WHERE owner_id = $1 AND ($2::uuid IS NULL OR id > $2::uuid)
           ORDER BY id LIMIT $3""",
        owner_id,
        after,
        limit,
    )


async def get_account(db: Database, owner_id: str, account_id: str) -> Record | None:
    return await db.fetchrow(
        "SELECT * FROM accounts WHERE id = $1 AND owner_id = $2", account_id, owner_id
    )


async def update_account(
    db: Database, owner_id: str, account_id: str, changes: dict[str, Any]
) -> Record | None:
    if not changes:
        return await get_account(db, owner_id, account_id)
    return await db.transaction(_update_account, owner_id, account_id, changes)


async def _update_account(
    conn: Connection, owner_id: str, account_id: str, changes: dict[str, Any]
) -> Record | None:
    limit_changed = bool({"portfolio_id", "messaging_limit"} & changes.keys())
    if limit_changed and "portfolio_id" in changes:
        await _release_for_limit(conn, owner_id, account_id)  # the portfolio it leaves
    row = await conn.fetchrow(
        f"""UPDATE accounts SET {set_clause(changes, _ACCOUNT_COLUMNS, 3)}, updated_at = now()
            WHERE id = $1 AND owner_id = $2 RETURNING *""",
        account_id,
        owner_id,
        *changes.values(),
    )
    if row is not None and limit_changed:
        await _release_for_limit(conn, owner_id, account_id)  # the portfolio it is in now
    return row


async def _release_for_limit(conn: Connection, owner_id: str, account_id: str) -> None:
    """Recipients of the account's portfolio waiting for the messaging limit are
    looked at again now (they reserve again: with a new limit they may pass, or
    wait until the right moment), and their campaigns' actors told so."""
    rows = await conn.fetch(
        """WITH portfolio AS (
               SELECT b.id FROM accounts a JOIN accounts b ON b.owner_id = a.owner_id
                  AND (b.id = a.id OR b.portfolio_id = a.portfolio_id)
               WHERE a.id = $1 AND a.owner_id = $2
           ), released AS (
               UPDATE campaign_recipients r SET not_before = NULL, deferred_reason = NULL
               FROM campaigns c
               WHERE c.id = r.campaign_id AND c.account_id IN (SELECT id FROM portfolio)
                 AND r.status = 'pending' AND r.deferred_reason = 'messaging_limit'
               RETURNING r.campaign_id
           )
           SELECT DISTINCT campaign_id FROM released""",
        account_id,
        owner_id,
    )
    await campaign_runs.notify_all_in(
        conn, CommandKind.RECHECK, [row["campaign_id"] for row in rows]
    )


async def _delete_account(conn: Connection, owner_id: str, account_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM accounts WHERE id = $1 AND owner_id = $2 FOR UPDATE", account_id, owner_id
    )
    if found is None:
        return False
    used: int = await conn.fetchval(
        "SELECT count(*) FROM campaigns WHERE account_id = $1", account_id
    )
    if used:
        raise InUse(
            f"The account is used by {used} campaign(s); delete them before deleting the account"
        )
    await conn.execute("DELETE FROM accounts WHERE id = $1", account_id)
    return True


async def delete_account(db: Database, owner_id: str, account_id: str) -> bool:
    """False when there is no such account; InUse while campaigns reference it."""
    return await db.transaction(_delete_account, owner_id, account_id)
