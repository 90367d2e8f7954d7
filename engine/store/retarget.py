"""Retarget audiences: a campaign's recipients in one state, frozen into a new draft.

The states, read from each recipient's status (cumulative: `read` implies
delivered) and its `replied_at` (docs/http-api.md, "Retarget"):

- `not_delivered`: WhatsApp accepted the message (`sent`) and no delivery, read
  or failure came back. In-doubt and still pending recipients are not in it: they
  were perhaps never sent, or the campaign still owns them.
- `not_read`: delivered, not read, and no reply (a reply proves it was read,
  whatever the recipient's read receipts say).
- `not_replied`: delivered or read, and no reply.
- `failed`: failed, before or after WhatsApp accepted it.

Contacts deleted or opted out since are left out, at creation and again when the
draft starts.
"""

from __future__ import annotations

from typing import Any

from engine.core.retarget import Audience
from engine.store.database import Connection

_STATES: dict[Audience, str] = {
    "not_delivered": "r.status = 'sent'",
    "not_read": "r.status = 'delivered' AND r.replied_at IS NULL",
    "not_replied": "r.status IN ('delivered', 'read') AND r.replied_at IS NULL",
    "failed": "r.status = 'failed'",
}


async def freeze_in(
    conn: Connection, campaign_id: Any, owner_id: str, source_id: str, audience: Audience
) -> int:
    """Give the draft `campaign_id` the recipients of `source_id` in `audience`, with
    the phone and variables they had there; returns how many. Marks its recipients
    frozen, so starting it does not read an audience again."""
    await conn.execute(
        f"""INSERT INTO campaign_recipients (campaign_id, contact_id, phone, variables)
            SELECT $1, r.contact_id, r.phone, r.variables
            FROM campaign_recipients r JOIN contacts k ON k.id = r.contact_id
            WHERE r.campaign_id = $2 AND k.owner_id = $3 AND NOT k.opted_out
              AND {_STATES[audience]}
            ORDER BY r.id""",
        campaign_id,
        source_id,
        owner_id,
    )
    total: int = await conn.fetchval(
        """UPDATE campaigns SET recipients_frozen = true,
               total_recipients = (SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1)
           WHERE id = $1 RETURNING total_recipients""",
        campaign_id,
    )
    return total


async def drop_opted_out_in(conn: Connection, campaign_id: str) -> int:
    """Before a draft with frozen recipients starts: remove those whose contact was
    deleted or opted out since, as an audience read at start would. Returns how many."""
    dropped: int = await conn.fetchval(
        """WITH gone AS (
               DELETE FROM campaign_recipients r
               WHERE r.campaign_id = $1 AND r.status = 'pending'
                 AND NOT EXISTS (SELECT 1 FROM contacts k
                                 WHERE k.id = r.contact_id AND NOT k.opted_out)
               RETURNING 1
           ), counted AS (
               -- No trigger counts deletions: the counters are adjusted here.
               UPDATE campaign_counters SET pending = pending - (SELECT count(*) FROM gone)
               WHERE campaign_id = $1
           )
           SELECT count(*) FROM gone""",
        campaign_id,
    )
    return dropped
