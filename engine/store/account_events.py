"""Signals (template, quality and account webhooks) applied to accounts and campaigns,
and the account event log they leave (docs/webhooks.md, "Signals").

A signal names a WhatsApp Business Account (`entry[].id`): it concerns every account
whose `business_account_id` is that, and any whose `phone_number_id` the signal
carries. One transaction per batch: the accounts matched in one statement, one
statement per signal that acts (pauses or resumes campaigns, with NOTIFY so the
daemon running each campaign stops or restarts it, or lowers the accounts'
messaging limit), and the log written in one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from engine.core.signals import (
    LowerMessagingLimit,
    PauseCampaigns,
    ResumeCampaigns,
    SignalAction,
    decide,
)
from engine.messages import (
    AccountSignal,
    CommandKind,
    QualitySignal,
    Signal,
    TemplateStatusSignal,
)
from engine.store.campaign_runs import notify_all_in
from engine.store.database import Connection, Database, Record

_MATCH_ACCOUNTS = """
SELECT s.i, a.id, a.owner_id
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(waba, number, i)
JOIN accounts a ON a.business_account_id = s.waba OR a.phone_number_id = s.number
ORDER BY s.i, a.id
"""

# The messages a campaign sends: its A/B variants' when it has some (engine/store/variants.py),
# else its own; a template's language is a code or `{"code": ...}`.
_PAUSE_TEMPLATE = """
WITH target AS (
    SELECT c.id, c.status FROM campaigns c
    WHERE c.account_id = ANY($1::uuid[]) AND c.status IN ('running', 'scheduled')
      AND c.message_type = 'template'
      AND EXISTS (
          SELECT 1 FROM jsonb_array_elements(
              CASE WHEN jsonb_array_length(c.variants) > 0 THEN c.variants
                   ELSE jsonb_build_array(jsonb_build_object('messageContent', c.message_content))
              END) AS v(item)
          WHERE v.item->'messageContent'->>'name' = $2
            AND ($3::text IS NULL
                 OR coalesce(v.item->'messageContent'->'language'->>'code',
                             v.item->'messageContent'->>'language') = $3))
    ORDER BY c.id FOR UPDATE
)
UPDATE campaigns c SET status = 'paused', paused_at = $4, pause_reason = $5,
       paused_by_signal = $6, updated_at = $4
FROM target WHERE c.id = target.id
RETURNING c.id, c.account_id, c.owner_id, target.status AS previous
"""

# Campaigns already paused by another signal are taken over: that signal's end
# (APPROVED) must not resume a campaign whose account is now restricted.
_PAUSE_ACCOUNT = """
WITH target AS (
    SELECT c.id, c.status FROM campaigns c
    WHERE c.account_id = ANY($1::uuid[])
      AND (c.status IN ('running', 'scheduled')
           OR (c.status = 'paused' AND c.paused_by_signal IS NOT NULL))
    ORDER BY c.id FOR UPDATE
)
UPDATE campaigns c SET status = 'paused', paused_at = $2, pause_reason = $3,
       paused_by_signal = $4, updated_at = $2
FROM target WHERE c.id = target.id
RETURNING c.id, c.account_id, c.owner_id, target.status AS previous
"""

# As the resume transition (engine/store/campaign_runs.py), for those the engine paused.
_RESUME = """
WITH target AS (
    SELECT c.id FROM campaigns c
    WHERE c.account_id = ANY($1::uuid[]) AND c.status = 'paused' AND c.paused_by_signal = $2
    ORDER BY c.id FOR UPDATE
)
UPDATE campaigns c SET status = 'scheduled', scheduled_at = $3, pause_reason = NULL,
       paused_by_signal = NULL, updated_at = $3
FROM target WHERE c.id = target.id
RETURNING c.id, c.account_id, c.owner_id, 'paused' AS previous
"""

# Lowered only: a limit the operator set lower stays (engine/core/signals.py).
_LOWER_LIMIT = """
UPDATE accounts SET messaging_limit = $2, updated_at = $3
WHERE id = ANY($1::uuid[]) AND (messaging_limit IS NULL OR messaging_limit > $2)
"""

_LOG = """
INSERT INTO account_events (account_id, kind, event, content, paused_campaigns,
                            resumed_campaigns, received_at)
SELECT u.account_id, u.kind, u.event, u.content::jsonb, u.paused::uuid[], u.resumed::uuid[], $8
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[])
    AS u(account_id, kind, event, content, paused, resumed, i)
ORDER BY u.i
"""

# The webhook `field` each signal came in, which the log keeps as its kind.
KINDS: dict[type[Signal], str] = {
    TemplateStatusSignal: "message_template_status_update",
    QualitySignal: "phone_number_quality_update",
    AccountSignal: "account_update",
}


class CampaignChange(msgspec.Struct, frozen=True):
    campaign_id: str
    owner_id: str
    previous: str  # its status before: running, scheduled, or paused
    reason: str | None  # the pause reason; None for a resume


class AppliedSignals(msgspec.Struct, frozen=True):
    logged: int  # event log rows written (a signal may concern several accounts)
    unmatched: int  # signals that named no account
    paused: list[CampaignChange]
    resumed: list[CampaignChange]


async def apply_signals(
    db: Database, signals: Sequence[Signal], *, now: datetime
) -> AppliedSignals:
    """Apply a batch of signals in one transaction; `DATABASE_ERRORS` leave nothing."""
    if not signals:
        return AppliedSignals(0, 0, [], [])
    return await db.transaction(_apply_signals, list(signals), now)


async def _apply_signals(conn: Connection, signals: list[Signal], now: datetime) -> AppliedSignals:
    matched = await conn.fetch(
        _MATCH_ACCOUNTS,
        [s.business_account_id for s in signals],
        [s.phone_number_id for s in signals],
    )
    accounts: dict[int, list[Record]] = {}
    for row in matched:
        accounts.setdefault(row["i"] - 1, []).append(row)
    paused: list[CampaignChange] = []
    resumed: list[CampaignChange] = []
    log: list[tuple[str, int, list[str], list[str]]] = []
    for i, signal in enumerate(signals):
        names = accounts.get(i, [])
        action = decide(signal) if names else None
        changed = await _act(conn, action, [r["id"] for r in names], now) if action else []
        for row in names:
            mine = [c for c in changed if c["account_id"] == row["id"]]
            change_list = paused if isinstance(action, PauseCampaigns) else resumed
            change_list.extend(_change(c, action) for c in mine)
            ids = [str(c["id"]) for c in mine]
            log.append(
                (
                    str(row["id"]),
                    i,
                    ids if isinstance(action, PauseCampaigns) else [],
                    ids if isinstance(action, ResumeCampaigns) else [],
                )
            )
    if log:
        await conn.execute(
            _LOG,
            [account for account, _, _, _ in log],
            [KINDS[type(signals[i])] for _, i, _, _ in log],
            [signals[i].event for _, i, _, _ in log],
            [signals[i].content.decode() for _, i, _, _ in log],
            [_array(p) for _, _, p, _ in log],
            [_array(r) for _, _, _, r in log],
            [i for _, i, _, _ in log],
            now,
        )
    return AppliedSignals(
        logged=len(log),
        unmatched=sum(1 for i in range(len(signals)) if i not in accounts),
        paused=paused,
        resumed=resumed,
    )


async def _act(
    conn: Connection, action: SignalAction, account_ids: list[Any], now: datetime
) -> list[Record]:
    match action:
        case PauseCampaigns(template_name=str(name)):
            rows = await conn.fetch(
                _PAUSE_TEMPLATE,
                account_ids,
                name,
                action.template_language,
                now,
                action.reason,
                action.key,
            )
        case PauseCampaigns():
            rows = await conn.fetch(_PAUSE_ACCOUNT, account_ids, now, action.reason, action.key)
        case ResumeCampaigns():
            rows = await conn.fetch(_RESUME, account_ids, action.key, now)
        case LowerMessagingLimit():
            await conn.execute(_LOWER_LIMIT, account_ids, action.limit, now)
            return []
    if isinstance(action, ResumeCampaigns):
        await notify_all_in(conn, CommandKind.RESUME, [row["id"] for row in rows])
    else:  # a campaign paused already (by another signal) has nothing to stop
        paused = [row["id"] for row in rows if row["previous"] != "paused"]
        await notify_all_in(conn, CommandKind.PAUSE, paused)
    return rows


def _change(row: Record, action: SignalAction | None) -> CampaignChange:
    return CampaignChange(
        campaign_id=str(row["id"]),
        owner_id=row["owner_id"],
        previous=row["previous"],
        reason=action.reason if isinstance(action, PauseCampaigns) else None,
    )


def _array(ids: list[str]) -> str:
    """A PostgreSQL array literal of uuids (an unnest cannot take an array of arrays)."""
    return "{" + ",".join(ids) + "}"


async def list_events(
    db: Database, owner_id: str, account_id: str, *, before: int | None, limit: int
) -> list[Record] | None:
    """The account's events, newest first, after the keyset position `before` (an
    event id); None when the account is not the owner's."""
    owned = await db.fetchval(
        "SELECT 1 FROM accounts WHERE id = $1 AND owner_id = $2", account_id, owner_id
    )
    if owned is None:
        return None
    return await db.fetch(
        """SELECT * FROM account_events
           WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3""",
        account_id,
        before,
        limit,
    )
