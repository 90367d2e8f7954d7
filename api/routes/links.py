"""`GET /l/<code>`: a tracked link (engine/core/tracked_links.py). No authentication:
recipients follow it from WhatsApp. 302 to the original URL, or a plain 404."""

from __future__ import annotations

from quart import Blueprint, Response

from api import context

blueprint = Blueprint("links", __name__)


@blueprint.get("/l/<code>")
async def follow(code: str) -> Response:
    url = await context.engine().links.follow(code)
    if url is None:
        return Response("Not found\n", status=404, content_type="text/plain; charset=utf-8")
    response = Response("", status=302)
    response.headers["Location"] = url
    # Each click must reach the daemon to be counted.
    response.headers["Cache-Control"] = "no-store"
    return response
