"""One implementation of every webhook behaviour, for both doors.

`api/routes/webhooks.py` (Quart, on the API port) and `api/webhook_listener.py` (h11,
on its own port) only move bytes: each hands the signature header, the raw body
or the query to a `WebhookDoor` and writes back the `Answer` it returns, so a
request gets the same answer, and the same facts are applied, whichever door it
came through. No I/O here: facts go to `submit` (the engine's applier queue).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from engine.core.callback_reference import CallbackReferences
from engine.core.webhook_payload import MalformedPayload, parse_notification, signature_valid
from engine.messages import WebhookFact
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.service.engine import Engine

# (facts, refused count) -> False when the backlog is full and nothing was taken.
Submit = Callable[[Sequence[WebhookFact], int], bool]

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"


class Answer(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: bytes = JSON


def failure(status: int, code: str, message: str, field: str | None = None) -> Answer:
    """The API's error envelope (api/envelope.py)."""
    error: dict[str, Any] = {"code": code}
    if field is not None:
        error["field"] = field
    return Answer(
        status, msgspec.json.encode({"success": False, "message": message, "error": error})
    )


ACCEPTED = Answer(200, msgspec.json.encode({"success": True}))
NOT_CONFIGURED = failure(
    401, "webhooks_not_configured", "Webhooks are refused: WHATSAPP_APP_SECRET is not set"
)
INVALID_SIGNATURE = failure(
    401, "invalid_signature", "The X-Hub-Signature-256 signature is invalid"
)
BACKLOG_FULL = failure(
    503, "webhook_backlog_full", "Too many status updates are waiting; retry later"
)
VERIFICATION_FAILED = failure(403, "verification_failed", "The verify token does not match")


class WebhookDoor:
    def __init__(
        self,
        *,
        app_secret: str | None,
        verify_token: str | None,
        references: CallbackReferences,
        submit: Submit,
        max_body_bytes: int,
    ) -> None:
        self._app_secret = app_secret
        self._verify_token = verify_token.encode() if verify_token is not None else None
        self._references = references
        self._submit = submit
        self.max_body_bytes = max_body_bytes
        self.too_large = failure(
            413,
            "payload_too_large",
            f"The request body is larger than the limit of {max_body_bytes} bytes",
        )

    def notification(self, signature: bytes | str | None, body: bytes) -> Answer:
        """`POST /webhooks/whatsapp`: check the signature, parse, queue the facts."""
        if self._app_secret is None:
            return NOT_CONFIGURED
        if len(body) > self.max_body_bytes:
            return self.too_large
        if not signature_valid(self._app_secret, body, signature):
            return INVALID_SIGNATURE
        try:
            parsed = parse_notification(body, self._references)
        except MalformedPayload as error:
            return failure(
                400,
                "malformed_payload",
                f"The body is not a WhatsApp notification: {error.message}",
                error.field,
            )
        if not self._submit(parsed.all_facts(), parsed.refused):
            return BACKLOG_FULL
        # Also when every fact was refused: Meta would retry a poison body for days.
        return ACCEPTED

    def subscription(self, query: Mapping[str, str]) -> Answer:
        """`GET /webhooks/whatsapp`: Meta's subscription check echoes `hub.challenge`."""
        given = query.get("hub.verify_token")
        if (
            self._verify_token is None
            or query.get("hub.mode") != "subscribe"
            or given is None
            or not hmac.compare_digest(given.encode("utf-8", "replace"), self._verify_token)
        ):
            return VERIFICATION_FAILED
        return Answer(200, query.get("hub.challenge", "").encode("utf-8", "replace"), TEXT)


def door_for(engine: Engine, settings: Settings) -> WebhookDoor:
    def submit(facts: Sequence[WebhookFact], refused: int) -> bool:
        return engine.submit_status_updates(facts, refused=refused)

    return WebhookDoor(
        app_secret=settings.whatsapp.app_secret,
        verify_token=settings.whatsapp.verify_token,
        references=engine.callback_references,
        submit=submit,
        max_body_bytes=settings.webhooks.max_body_bytes,
    )
