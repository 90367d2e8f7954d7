"""The boundary between the engine and the WhatsApp Cloud API.

A sender task opens one `GatewaySession` and keeps it for its whole life, so a
session may own keep-alive connections without any locking. Sessions never
raise for an answer from the API or for a network failure: they return a
`SendResult` that `engine.core.error_classes.classify` turns into a decision.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

import msgspec

MessageType = Literal["text", "template", "image", "document"]


class AccountEndpoint(msgspec.Struct, frozen=True):
    """Where and as whom to send for one WhatsApp account."""

    account_id: str
    api_url: str  # e.g. https://graph.facebook.com/v21.0, no trailing slash
    phone_number_id: str
    access_token: str


class OutgoingMessage(msgspec.Struct, frozen=True):
    """One rendered message, ready to be written to the wire."""

    recipient_id: int  # sent as biz_opaque_callback_data, resolves in-doubt sends
    to: str  # E.164 phone number
    message_type: MessageType
    # The type-specific object of the Cloud API body, already rendered:
    # text: {"body": ...}; template: {"name", "language": {"code"}, "components"};
    # image / document: {"link", "caption"?}.
    payload: dict[str, Any]


class SendResult(msgspec.Struct, frozen=True):
    """What one request produced. `http_status` is None when no answer came back."""

    ok: bool
    provider_message_id: str | None = None
    http_status: int | None = None
    error_code: int | None = None  # Graph API error code, when the API answered one
    error_message: str | None = None
    # No answer, and the request was (perhaps partly) written: WhatsApp may have
    # accepted it, so it must never be sent again blindly.
    may_have_arrived: bool = False


class GatewaySession(Protocol):
    async def send(self, endpoint: AccountEndpoint, message: OutgoingMessage) -> SendResult: ...


class Gateway(Protocol):
    def open_session(self) -> AbstractAsyncContextManager[GatewaySession]: ...
