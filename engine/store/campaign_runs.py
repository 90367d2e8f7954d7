"""What the engine reads and changes to run a campaign: its plan, control
transitions, status, cursor, and the commands announced to every daemon.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from engine.core import lifecycle
from engine.core.send_window import SendWindow
from engine.messages import CommandKind
from engine.store.database import Connection, Database, Record
from engine.store.errors import NotFound
from engine.store.recipients import ENSURE_COUNTERS, FREEZE_COLUMNS, insert_audience_in

# NOTIFY channel: every daemon's supervisor listens, so a command issued through
# any daemon reaches the one that owns the campaign. Payload: "<action>:<campaign id>".
COMMAND_CHANNEL = "campaign_engine_commands"


class Throttle(msgspec.Struct, frozen=True):
    messagesPerMinute: float = 20.0
    batchSize: int = 100
    delayBetweenBatches: float = 0.0


class CampaignPlan(msgspec.Struct, frozen=True):
    """What a campaign actor needs to run a campaign, read once at start."""

    id: str
    owner_id: str
    name: str
    status: str
    message_type: str
    message_content: Any
    media_url: str | None
    template_variables: dict[str, str]
    throttle: Throttle
    total_recipients: int
    batch_cursor: int
    started_at: datetime | None
    account_id: str
    account_status: str
    account_api_url: str | None
    account_phone_number_id: str
    account_access_token: str
    account_messages_per_second: int
    # Tracked links (engine/core/tracked_links.py): the URLs to replace, and the key
    # of their codes; empty and None when the campaign does not track links.
    tracked_urls: tuple[str, ...] = ()
    link_key: bytes | None = None
    send_window: SendWindow | None = None  # None: any time
    # A/B variants (engine/core/ab_split.py): each one's message content, in order,
    # and the sample-then-winner test's state; empty and None without them.
    variant_contents: tuple[Any, ...] = ()
    variant_names: tuple[str, ...] = ()
    ab_test: AbTestPlan | None = None

    def content_of(self, variant: int | None) -> Any:
        """The message content of a recipient of this variant (None: the campaign's)."""
        return self.message_content if variant is None else self.variant_contents[variant]


class AbTestPlan(msgspec.Struct, frozen=True):
    """A campaign's sample-then-winner test as its actor starts (engine/store/variants.py)."""

    metric: str
    decide_after_minutes: float
    sample_size: int  # recipients in the sample; the others wait for the winner
    decide_at: datetime | None  # set once the sample was sent
    winner: int | None  # set once chosen


def throttle_from_json(value: Any) -> Throttle:
    return msgspec.convert(value or {}, Throttle)


_ACTION_UPDATES = {
    # start: "now" — a scheduled campaign started by hand starts at once.
    "start": "status = 'scheduled', scheduled_at = $2, error = NULL",
    "pause": "status = 'paused', paused_at = $2, pause_reason = $3",
    "resume": "status = 'scheduled', scheduled_at = $2, pause_reason = NULL",
    "cancel": "status = 'cancelled', cancelled_at = $2",
}


def start_statement(columns: str = "c.*", joins: str = "") -> str:
    """The start in one statement once the audience is inserted: the status, the
    frozen counts and the announcement to every daemon (at commit, as `notify_in`),
    answering `columns` of the started row `c` (and of `joins`). Parameters: $1 the
    campaign, $2 now, $3 and $4 the announcement (`start_in` gives them), then the
    caller's; the statement sees the inserted recipients."""
    return f"""WITH {ENSURE_COUNTERS}, started AS (
        UPDATE campaigns SET {_ACTION_UPDATES["start"]}, updated_at = $2, {FREEZE_COLUMNS}
        FROM (SELECT pg_notify($3, $4)) AS announced
        WHERE campaigns.id = $1 RETURNING campaigns.*)
    SELECT {columns} FROM started c {joins}"""


_START = start_statement()


async def start_in(
    conn: Connection,
    current: Record,
    now: datetime,
    *,
    statement: str = _START,
    extra: tuple[Any, ...] = (),
) -> Record:
    """Start a campaign whose row (`current`) the caller holds locked and checked:
    insert its audience, then `statement` (a `start_statement`, with `extra` as its
    parameters from $5). Returns the statement's row."""
    await insert_audience_in(conn, current)
    campaign_id = str(current["id"])
    announcement = f"{CommandKind.START}:{campaign_id}"
    row: Record | None = await conn.fetchrow(
        statement, campaign_id, now, COMMAND_CHANNEL, announcement, *extra
    )
    assert row is not None  # locked by the caller
    return row


async def lock_for_action_in(
    conn: Connection, campaign_id: str, owner_id: str, action: lifecycle.CampaignAction
) -> Record:
    """The owner's campaign row, locked for this transaction, once `action` is allowed
    from its status. NotFound, or `lifecycle.TransitionRefused`."""
    current: Record | None = await conn.fetchrow(
        "SELECT * FROM campaigns WHERE id = $1 AND owner_id = $2 FOR UPDATE",
        campaign_id,
        owner_id,
    )
    if current is None:
        raise NotFound(campaign_id)
    lifecycle.check(action, current["status"])
    return current


async def _apply_action(
    conn: Connection,
    campaign_id: str,
    owner_id: str,
    action: lifecycle.CampaignAction,
    now: datetime,
    reason: str | None,
) -> tuple[str, Record]:
    current = await lock_for_action_in(conn, campaign_id, owner_id, action)
    previous: str = current["status"]
    if action == "start":
        return previous, await start_in(conn, current, now)
    row = await conn.fetchrow(
        f"UPDATE campaigns SET {_ACTION_UPDATES[action]}, updated_at = $2"
        " WHERE id = $1 RETURNING *",
        campaign_id,
        now,
        *([reason] if action == "pause" else []),
    )
    await notify_in(conn, CommandKind(action), campaign_id)
    assert row is not None
    return previous, row


async def apply_action(
    db: Database,
    campaign_id: str,
    owner_id: str,
    action: lifecycle.CampaignAction,
    *,
    now: datetime,
    reason: str | None = None,
) -> tuple[str, Record]:
    """Apply a control action for its owner; returns (previous status, new row).

    Raises NotFound, or `lifecycle.TransitionRefused` with the spec's message.
    Notifies every daemon in the same transaction.
    """
    return await db.transaction(_apply_action, campaign_id, owner_id, action, now, reason)


async def notify_in(conn: Connection, kind: CommandKind, campaign_id: object) -> None:
    """Announce a command to every daemon; inside a transaction, at its commit."""
    await conn.execute("SELECT pg_notify($1, $2)", COMMAND_CHANNEL, f"{kind}:{campaign_id}")


async def notify_all_in(conn: Connection, kind: CommandKind, campaign_ids: list[Any]) -> None:
    """`notify_in` for several campaigns, in one statement."""
    if campaign_ids:
        await conn.execute(
            "SELECT pg_notify($1, $2 || ':' || id) FROM unnest($3::text[]) AS id",
            COMMAND_CHANNEL,
            str(kind),
            [str(c) for c in campaign_ids],
        )


async def notify(db: Database, kind: CommandKind, campaign_id: str) -> None:
    await db.run(notify_in, kind, campaign_id)


async def load_plan(db: Database, campaign_id: str) -> CampaignPlan | None:
    row = await db.fetchrow(
        """SELECT c.*, a.status AS account_status, a.api_url AS account_api_url,
                  a.phone_number_id AS account_phone_number_id,
                  a.access_token AS account_access_token,
                  a.messages_per_second AS account_messages_per_second,
                  coalesce(k.batch_cursor, 0) AS batch_cursor,
                  CASE WHEN c.track_links THEN (SELECT key FROM callback_reference_key) END
                      AS link_key
           FROM campaigns c JOIN accounts a ON a.id = c.account_id
           LEFT JOIN campaign_cursors k ON k.campaign_id = c.id
           WHERE c.id = $1""",
        campaign_id,
    )
    if row is None:
        return None
    return CampaignPlan(
        id=str(row["id"]),
        owner_id=row["owner_id"],
        name=row["name"],
        status=row["status"],
        message_type=row["message_type"],
        message_content=row["message_content"],
        media_url=row["media_url"],
        template_variables={k: str(v) for k, v in (row["template_variables"] or {}).items()},
        throttle=throttle_from_json(row["throttle_config"]),
        total_recipients=row["total_recipients"],
        batch_cursor=row["batch_cursor"],
        started_at=row["started_at"],
        account_id=str(row["account_id"]),
        account_status=row["account_status"],
        account_api_url=row["account_api_url"],
        account_phone_number_id=row["account_phone_number_id"],
        account_access_token=row["account_access_token"],
        account_messages_per_second=row["account_messages_per_second"],
        tracked_urls=tuple(row["tracked_urls"]) if row["link_key"] else (),
        link_key=bytes.fromhex(row["link_key"]) if row["link_key"] else None,
        variant_contents=tuple(v["messageContent"] for v in row["variants"]),
        variant_names=tuple(v["name"] for v in row["variants"]),
        ab_test=_ab_test_plan(row),
        send_window=msgspec.convert(row["send_window"], SendWindow) if row["send_window"] else None,
    )


def _ab_test_plan(row: Record) -> AbTestPlan | None:
    test = row["ab_test"]
    if test is None:
        return None
    return AbTestPlan(
        metric=test["metric"],
        decide_after_minutes=float(test["decideAfterMinutes"]),
        sample_size=row["ab_sample_size"] or 0,
        decide_at=row["ab_decide_at"],
        winner=row["ab_winner"],
    )


async def load_throttle(db: Database, campaign_id: str) -> Throttle:
    value = await db.fetchval("SELECT throttle_config FROM campaigns WHERE id = $1", campaign_id)
    return throttle_from_json(value)


async def begin_running(db: Database, campaign_id: str, *, now: datetime) -> bool:
    """scheduled → running (a running campaign taken over stays running). False when
    the campaign was paused or cancelled meanwhile."""
    row = await db.fetchrow(
        """UPDATE campaigns SET status = 'running', started_at = coalesce(started_at, $2),
                  updated_at = $2
           WHERE id = $1 AND status IN ('scheduled', 'running') RETURNING id""",
        campaign_id,
        now,
    )
    return row is not None


async def finish(
    db: Database, campaign_id: str, status: str, *, now: datetime, error: str | None = None
) -> bool:
    """running → completed | failed. False when a command changed the status first."""
    column = {"completed": "completed_at", "failed": "failed_at"}[status]
    row = await db.fetchrow(
        f"""UPDATE campaigns SET status = $2, {column} = $3, error = $4, updated_at = $3
            WHERE id = $1 AND status = 'running' RETURNING id""",
        campaign_id,
        status,
        now,
        error,
    )
    return row is not None


async def pause_by_engine(db: Database, campaign_id: str, *, reason: str, now: datetime) -> bool:
    """running → paused, for an account-level error the operator must fix."""
    row = await db.fetchrow(
        """UPDATE campaigns SET status = 'paused', paused_at = $2, pause_reason = $3, updated_at = $2
           WHERE id = $1 AND status = 'running' RETURNING id""",
        campaign_id,
        now,
        reason,
    )
    return row is not None


async def _pause_number_campaigns(
    conn: Connection, phone_number_id: str, reason: str, now: datetime
) -> list[str]:
    rows = await conn.fetch(
        """UPDATE campaigns c SET status = 'paused', paused_at = $3, pause_reason = $2,
                  updated_at = $3
           FROM accounts a
           WHERE a.id = c.account_id AND a.phone_number_id = $1
             AND c.status IN ('running', 'scheduled')
           RETURNING c.id""",
        phone_number_id,
        reason,
        now,
    )
    await notify_all_in(conn, CommandKind.PAUSE, [row["id"] for row in rows])
    return [str(row["id"]) for row in rows]


async def pause_number_campaigns(
    db: Database, phone_number_id: str, *, reason: str, now: datetime
) -> list[str]:
    """WhatsApp restricted the phone number (131048, 368): every running or scheduled
    campaign sending through it pauses with `reason`, on every daemon (NOTIFY in the
    same transaction). Returns the campaigns paused."""
    return await db.transaction(_pause_number_campaigns, phone_number_id, reason, now)


async def campaign_status(
    db: Database, campaign_id: str
) -> tuple[str, datetime | None, str | None]:
    """(status, paused/cancelled time, pause reason)."""
    row = await db.fetchrow(
        "SELECT status, coalesce(cancelled_at, paused_at) AS at, pause_reason FROM campaigns WHERE id = $1",
        campaign_id,
    )
    if row is None:
        raise NotFound(campaign_id)
    return row["status"], row["at"], row["pause_reason"]


async def save_cursor(db: Database, campaign_id: str, cursor: int) -> None:
    """Remember how far the campaign has read; saves arriving out of order never go back."""
    await db.execute(
        """INSERT INTO campaign_cursors (campaign_id, batch_cursor) VALUES ($1, $2)
           ON CONFLICT (campaign_id) DO UPDATE
           SET batch_cursor = greatest(campaign_cursors.batch_cursor, excluded.batch_cursor)""",
        campaign_id,
        cursor,
    )
