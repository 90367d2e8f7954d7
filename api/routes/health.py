"""Liveness and monitoring: `/healthz` and `/metrics` (no token, for operators)."""

from __future__ import annotations

from quart import Blueprint, Response, current_app

from api import context
from api.envelope import json_response
from api.monitoring import render

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    if not await context.engine().monitoring.database_answers():
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    return json_response({"status": "ok"})


@blueprint.get("/metrics")
async def metrics() -> Response:
    snapshot = await context.engine().monitoring.snapshot()
    sockets = current_app.extensions.get(context.SOCKETS)
    body = render(snapshot, socketio_clients=sockets.clients if sockets is not None else 0)
    return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")
