"""WhatsApp webhooks on the API port: subscription check and signed notifications.

What they do is `api/webhooks/receive.py`, shared with the dedicated listener
(`api/webhook_listener.py`, far cheaper per request); this only moves bytes.
Facts are handed to the engine's webhook applier, which stores them in batches;
the answer does not wait for that, as Meta expects a fast 200.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, request

from api import context
from api.webhooks.receive import Answer, WebhookDoor, door_for

blueprint = Blueprint("webhooks", __name__)

_DOOR = "campaign_engine.webhook_door"


def _door() -> WebhookDoor:
    door = current_app.extensions.get(_DOOR)
    if door is None:
        door = current_app.extensions[_DOOR] = door_for(context.engine(), context.settings())
    assert isinstance(door, WebhookDoor)
    return door


def _response(answer: Answer) -> Response:
    return Response(answer.body, status=answer.status, content_type=answer.content_type.decode())


@blueprint.get("/webhooks/whatsapp")
async def verify_subscription() -> Response:
    return _response(_door().subscription(request.args))


@blueprint.post("/webhooks/whatsapp")
async def receive_notification() -> Response:
    body = await context.body()
    return _response(_door().notification(request.headers.get("X-Hub-Signature-256"), body))
