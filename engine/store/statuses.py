"""Webhook facts (statuses, replies) applied to recipients in one statement per batch.

Matching is strict (engine/core/callback_reference.py, docs/webhooks.md): a fact
names its recipient by a verified reference, else by wamid; it applies only if its
phone number id is that of the recipient's account, if the wamid is the recipient's
once one is stored, and never to a recipient still `pending`. A status's `pricing`
is kept on the recipient (`pricing_*`), counted per category on demand
(`PRICING_COUNTS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from engine.messages import StatusUpdate
from engine.store.database import Database
from engine.store.errors import DatabaseUnavailable

# What applying a batch may fail with while PostgreSQL is unreachable, restarting or
# refusing the statement: the applier keeps the facts and tries again later.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    DatabaseUnavailable,  # what engine/store/database.py makes of a lost connection
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)

_APPLY_STATUSES = """
WITH u AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::boolean[], $10::text[], $11::text[])
        AS u(ref_id, wamid, kind, at, error_code, error_message, phone_number_id,
             pricing_category, pricing_billable, pricing_model, pricing_type)
), keyed AS (
    -- A verified reference names the recipient; without one, the wamid does.
    SELECT coalesce(u.ref_id, (SELECT r.id FROM campaign_recipients r
                               WHERE r.provider_message_id = u.wamid LIMIT 1)) AS rid, u.*
    FROM u
), locked AS (
    -- Lock in id order: campaign actors record outcomes on the same rows concurrently.
    -- What may apply is judged on the row as locked (its latest version).
    SELECT x.id, x.status AS old_status, x.provider_message_id AS old_wamid, a.phone_number_id
    FROM campaign_recipients x
    JOIN campaigns c ON c.id = x.campaign_id
    JOIN accounts a ON a.id = c.account_id
    WHERE x.id IN (SELECT rid FROM keyed) AND x.status <> 'pending'
    ORDER BY x.id FOR UPDATE OF x
), matched AS (
    SELECT k.* FROM keyed k JOIN locked l ON l.id = k.rid
    -- NULL in a fact: not checked (facts built in-process; webhooks always carry both).
    WHERE (k.phone_number_id IS NULL OR k.phone_number_id = l.phone_number_id)
      AND (k.wamid IS NULL OR l.old_wamid IS NULL OR l.old_wamid = k.wamid)
), g AS (
    -- Several facts about one message in one batch collapse into one row: an
    -- UPDATE applies at most one source row per target.
    SELECT rid, count(*) AS facts,
           min(at) FILTER (WHERE kind IN ('sent', 'delivered', 'read', 'failed')) AS sent_at,
           min(at) FILTER (WHERE kind IN ('delivered', 'read')) AS delivered_at,
           min(at) FILTER (WHERE kind = 'read') AS read_at,
           min(at) FILTER (WHERE kind = 'failed') AS failed_at,
           min(at) FILTER (WHERE kind = 'replied') AS replied_at,
           max(error_code) AS error_code, max(error_message) AS error_message,
           max(wamid) AS wamid,
           -- What WhatsApp bills: the same object on each status of a message.
           max(pricing_category) AS pricing_category, bool_or(pricing_billable) AS pricing_billable,
           max(pricing_model) AS pricing_model, max(pricing_type) AS pricing_type
    FROM matched GROUP BY rid
)
UPDATE campaign_recipients r SET
    status = CASE
        WHEN r.status = 'failed' THEN 'failed'
        WHEN coalesce(r.read_at, g.read_at) IS NOT NULL THEN 'read'
        WHEN coalesce(r.delivered_at, g.delivered_at) IS NOT NULL THEN 'delivered'
        WHEN g.failed_at IS NOT NULL THEN 'failed'
        WHEN coalesce(r.sent_at, g.sent_at) IS NOT NULL THEN 'sent'
        ELSE r.status END,
    sent_at = coalesce(r.sent_at, g.sent_at),
    -- A failed message is final: a stray later "delivered" or "read" does not count.
    delivered_at = CASE WHEN r.status = 'failed' THEN r.delivered_at
                        ELSE coalesce(r.delivered_at, g.delivered_at) END,
    read_at = CASE WHEN r.status = 'failed' THEN r.read_at ELSE coalesce(r.read_at, g.read_at) END,
    replied_at = coalesce(r.replied_at, g.replied_at),
    failed_at = CASE WHEN r.status <> 'failed' AND g.failed_at IS NOT NULL
                      AND coalesce(r.delivered_at, g.delivered_at) IS NULL
                     THEN g.failed_at ELSE r.failed_at END,
    error_code = CASE WHEN g.failed_at IS NOT NULL AND r.status <> 'failed'
                      THEN g.error_code ELSE r.error_code END,
    error_message = CASE WHEN g.failed_at IS NOT NULL AND r.status <> 'failed'
                         THEN g.error_message ELSE r.error_message END,
    provider_message_id = coalesce(r.provider_message_id, g.wamid),
    pricing_category = coalesce(g.pricing_category, r.pricing_category),
    pricing_billable = coalesce(g.pricing_billable, r.pricing_billable),
    pricing_model = coalesce(g.pricing_model, r.pricing_model),
    pricing_type = coalesce(g.pricing_type, r.pricing_type)
FROM g JOIN locked ON locked.id = g.rid
WHERE r.id = g.rid
RETURNING r.campaign_id, g.facts, locked.old_status = 'in_doubt' AND r.status <> 'in_doubt' AS resolved
"""


class AppliedStatuses(msgspec.Struct, frozen=True):
    campaigns: list[str]  # every campaign a fact touched
    resolved_in_doubt: list[str]  # those where a send in doubt was resolved
    matched: int = 0  # facts that found their recipient; the others matched nothing


async def apply_status_updates(db: Database, updates: Sequence[StatusUpdate]) -> AppliedStatuses:
    """Apply a batch of webhook facts in one statement.

    Idempotent and order-independent: timestamps only ever fill in, a status only
    ever moves forward, and a reply is recorded once. Facts must be storable
    (engine/core/webhook_payload.py checks them); `DATABASE_ERRORS` leave nothing applied.
    """
    if not updates:
        return AppliedStatuses([], [])
    rows = await db.fetch(
        _APPLY_STATUSES,
        [u.recipient_id for u in updates],
        [u.provider_message_id for u in updates],
        [u.kind for u in updates],
        [u.at for u in updates],
        [u.error_code for u in updates],
        [u.error_message for u in updates],
        [u.phone_number_id for u in updates],
        [u.pricing.category if u.pricing else None for u in updates],
        [u.pricing.billable if u.pricing else None for u in updates],
        [u.pricing.pricing_model if u.pricing else None for u in updates],
        [u.pricing.type if u.pricing else None for u in updates],
    )
    return AppliedStatuses(
        campaigns=sorted({str(r["campaign_id"]) for r in rows}),
        resolved_in_doubt=sorted({str(r["campaign_id"]) for r in rows if r["resolved"]}),
        matched=sum(r["facts"] for r in rows),
    )


# `{category: {messages, billable}}` over the campaign `c`'s recipients that a status
# priced, as a column of a query over campaigns. Counted when asked, not kept up to
# date per message: a counter would cost every status of every message, and only a
# campaign's detail asks.
PRICING_COUNTS = """(SELECT jsonb_object_agg(p.category, jsonb_build_object(
        'messages', p.messages, 'billable', p.billable))
    FROM (SELECT pricing_category AS category, count(*) AS messages,
                 count(*) FILTER (WHERE pricing_billable) AS billable
          FROM campaign_recipients
          WHERE campaign_id = c.id AND pricing_category IS NOT NULL
          GROUP BY pricing_category) p)"""


def pricing_counts(column: dict[str, dict[str, int]] | None) -> dict[str, dict[str, int]]:
    """The PRICING_COUNTS column as the campaign object shows it: by category's name."""
    return dict(sorted((column or {}).items()))
