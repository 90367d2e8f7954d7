"""Queue health (spec "Monitoring"): `/api/v1/queue`, for the caller's campaigns."""

from __future__ import annotations

from quart import Blueprint, Response

from api import context
from api.envelope import success

blueprint = Blueprint("queue", __name__)


@blueprint.get("/queue")
async def queue_health() -> Response:
    health = await context.engine().monitoring.queue_health(context.user_id())
    return success(health, "Queue health retrieved successfully")
