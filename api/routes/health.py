"""Liveness and monitoring: `/healthz` and `/metrics` (no token, for operators)."""

from __future__ import annotations

import logging

import msgspec
from quart import Blueprint, Response, current_app

from api import context
from api.envelope import json_response
from api.monitoring import Snapshot, render
from engine.actors.sender_pool import LATENCY_BUCKETS
from engine.store import queue

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    try:
        answered = await context.db().fetchval("SELECT 1") == 1
    except Exception as error:  # any failure to reach the database means "not ready"
        log.warning("health check: database did not answer: %s", error)
        answered = False
    if not answered:
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    return json_response({"status": "ok"})


@blueprint.get("/metrics")
async def metrics() -> Response:
    engine = context.engine()
    store = await queue.monitoring_snapshot(engine.db)
    sockets = current_app.extensions.get(context.SOCKETS)
    snapshot = Snapshot(
        statistics=msgspec.to_builtins(engine.statistics()),
        store=store,
        socketio_clients=sockets.clients if sockets is not None else 0,
        latency_buckets=LATENCY_BUCKETS,
    )
    return Response(render(snapshot), content_type="text/plain; version=0.0.4; charset=utf-8")
