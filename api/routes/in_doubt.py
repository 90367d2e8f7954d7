"""Settling a campaign's in-doubt sends by hand: `POST /api/v1/campaigns/:id/in-doubt`."""

from __future__ import annotations

from typing import Literal

import msgspec
from quart import Blueprint, Response

from api import context, params
from api.envelope import success
from api.schemas import decode

blueprint = Blueprint("in_doubt", __name__)

DESCRIPTION = """Settle every send of this campaign whose outcome is unknown (`in_doubt`:
the request may have reached WhatsApp, but no answer was stored, because a daemon
stopped or a connection broke after the request was written). Without this, a status
webhook resolves each of them, or `delivery.in_doubt_timeout` after it was sent
(`in_doubt.resolves_at` on the campaign) `delivery.on_in_doubt` does.

- `fail`: they become `failed` with code `outcome_unknown`. Nothing is sent again;
  a recipient whose request did arrive got the message and is counted as failed.
- `resend`: they go back to `pending` and are sent again while the campaign runs.
  **Risk: a recipient whose first request did reach WhatsApp receives the message
  twice.** Not allowed once the campaign is completed, failed or cancelled.

A status webhook that arrives later still applies. Answers
`{id, action, resolved, campaign}`, `resolved` being how many sends were settled."""


class InDoubtResolution(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["fail", "resend"]


@blueprint.post("/campaigns/<campaign_id>/in-doubt")
async def resolve_in_doubt(campaign_id: str) -> Response:
    key = params.resource_id(campaign_id, "Campaign")
    body = decode(await context.body(), InDoubtResolution)
    result = await context.engine().resolve_in_doubt(key, context.user_id(), body.action)
    done = "failed" if body.action == "fail" else "queued to be sent again"
    return success(result, f"{result['resolved']} in-doubt sends {done}")
