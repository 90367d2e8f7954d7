"""Sends in doubt, settled by the operator before their timeout.

A send is `in_doubt` when its request may have reached WhatsApp but no answer
was stored (the daemon died, or the connection was lost after the request was
written). A status webhook or `delivery.in_doubt_timeout` normally settles it;
an operator who knows better settles them all now: `fail` (never sends twice)
or `resend` (sends again; a recipient whose first request did arrive gets the
message twice).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from engine.core import lifecycle
from engine.messages import CommandKind
from engine.store.campaign_runs import notify_in
from engine.store.database import Connection, Database
from engine.store.errors import NotFound

InDoubtAction = Literal["fail", "resend"]

_FAIL = """UPDATE campaign_recipients SET status = 'failed', failed_at = $2,
               error_code = 'outcome_unknown',
               error_message = 'Marked failed by the operator: the outcome of this send is unknown'
           WHERE campaign_id = $1 AND status = 'in_doubt'"""
_RESEND = """UPDATE campaign_recipients SET status = 'pending', not_before = NULL
             WHERE campaign_id = $1 AND status = 'in_doubt'"""


async def _resolve(
    conn: Connection, campaign_id: str, owner_id: str, action: InDoubtAction, now: datetime
) -> int:
    status = await conn.fetchval(
        "SELECT status FROM campaigns WHERE id = $1 AND owner_id = $2 FOR UPDATE",
        campaign_id,
        owner_id,
    )
    if status is None:
        raise NotFound(campaign_id)
    if action == "resend" and lifecycle.is_final(status):
        raise lifecycle.TransitionRefused(
            "campaign_finished",
            f"The campaign is {status}: its in-doubt sends can only be failed, not resent",
        )
    if action == "fail":
        result = await conn.execute(_FAIL, campaign_id, now)
    else:
        result = await conn.execute(_RESEND, campaign_id)
    resolved = int(result.rsplit(" ", 1)[1])
    if resolved:
        # Its actor (on whichever daemon) looks again: resent rows are pending
        # again, failed ones may complete the campaign.
        await notify_in(conn, CommandKind.RECHECK, campaign_id)
    return resolved


async def resolve(
    db: Database, campaign_id: str, owner_id: str, action: InDoubtAction, *, now: datetime
) -> int:
    """Settle every in-doubt send of the owner's campaign; returns how many.
    NotFound, or TransitionRefused for `resend` on a finished campaign."""
    return await db.transaction(_resolve, campaign_id, owner_id, action, now)
