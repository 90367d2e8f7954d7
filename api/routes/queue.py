"""Queue health (spec "Monitoring"): `/api/v1/queue`, for the caller's campaigns."""

from __future__ import annotations

from quart import Blueprint, Response

from api import context
from api.envelope import success
from engine.store import queue

blueprint = Blueprint("queue", __name__)


@blueprint.get("/queue")
async def queue_health() -> Response:
    engine = context.engine()
    health = await queue.queue_health(engine.db, context.user_id(), now=engine.clock.now())
    return success(health, "Queue health retrieved successfully")
