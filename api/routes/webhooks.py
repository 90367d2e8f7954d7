"""WhatsApp webhooks: subscription check and signed notifications (CONTRACT section 7).

Facts are handed to the engine's webhook applier, which stores them in batches;
the answer does not wait for that, as Meta expects a fast 200.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from api import context
from api.envelope import ApiError, json_response
from engine.core.webhook_payload import MalformedPayload, parse_notification, signature_valid

blueprint = Blueprint("webhooks", __name__)


@blueprint.get("/webhooks/whatsapp")
async def verify_subscription() -> Response:
    expected = context.settings().whatsapp.verify_token
    args = request.args
    if (
        expected is None
        or args.get("hub.mode") != "subscribe"
        or args.get("hub.verify_token") != expected
    ):
        raise ApiError(403, "verification_failed", "The verify token does not match")
    return Response(args.get("hub.challenge", ""), status=200, content_type="text/plain")


@blueprint.post("/webhooks/whatsapp")
async def receive_notification() -> Response:
    secret = context.settings().whatsapp.app_secret
    body = await context.body()
    if secret is None:
        raise ApiError(
            401, "webhooks_not_configured", "Webhooks are refused: WHATSAPP_APP_SECRET is not set"
        )
    if not signature_valid(secret, body, request.headers.get("X-Hub-Signature-256")):
        raise ApiError(401, "invalid_signature", "The X-Hub-Signature-256 signature is invalid")
    try:
        facts = parse_notification(body)
    except MalformedPayload as error:
        raise ApiError(
            400, "malformed_payload", f"The body is not a WhatsApp notification: {error}"
        ) from None
    if facts and not context.engine().submit_status_updates(facts):
        raise ApiError(
            503, "webhook_backlog_full", "Too many status updates are waiting; retry later"
        )
    return json_response({"success": True})
