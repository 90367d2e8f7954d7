"""WhatsApp Cloud API webhook payloads → `StatusUpdate` facts. Pure: no I/O.

Only the fields we use are modelled; msgspec ignores the rest, so new fields
Meta adds do not break us.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Literal

import msgspec

from engine.messages import StatusUpdate


class WebhookError(msgspec.Struct, frozen=True):
    code: int | str | None = None
    title: str | None = None
    message: str | None = None


class Status(msgspec.Struct, frozen=True):
    id: str
    status: str
    timestamp: str | int
    recipient_id: str | None = None
    errors: list[WebhookError] = []
    biz_opaque_callback_data: str | None = None


class Context(msgspec.Struct, frozen=True):
    id: str | None = None


class InboundMessage(msgspec.Struct, frozen=True):
    timestamp: str | int
    context: Context | None = None


class Value(msgspec.Struct, frozen=True):
    statuses: list[Status] = []
    messages: list[InboundMessage] = []


class Change(msgspec.Struct, frozen=True):
    value: Value = Value()
    field: str | None = None


class Entry(msgspec.Struct, frozen=True):
    changes: list[Change] = []


class Notification(msgspec.Struct, frozen=True):
    entry: list[Entry]
    object: str | None = None


_KINDS: frozenset[str] = frozenset({"sent", "delivered", "read", "failed"})
Kind = Literal["sent", "delivered", "read", "failed", "replied"]


class MalformedPayload(Exception):
    """The body is not a Cloud API notification."""


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex>` over the raw body, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


def sign(secret: str, body: bytes) -> str:
    """The header value Meta would send for `body` (for tests and the simulator)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _moment(timestamp: str | int) -> datetime:
    try:
        return datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise MalformedPayload(f"timestamp {timestamp!r} is not unix seconds") from None


def _recipient_id(opaque: str | None) -> int | None:
    """Our recipient id rides in biz_opaque_callback_data; anything else is not ours."""
    if opaque is None or not opaque.strip().isdigit():
        return None
    return int(opaque)


def parse_notification(body: bytes) -> list[StatusUpdate]:
    """The facts a notification carries: statuses, and replies (inbound messages
    with `context.id`, the wamid they answer). Statuses we do not track are skipped."""
    try:
        notification = msgspec.json.decode(body, type=Notification)
    except msgspec.DecodeError as error:
        raise MalformedPayload(str(error)) from None
    facts: list[StatusUpdate] = []
    for entry in notification.entry:
        for change in entry.changes:
            for status in change.value.statuses:
                if status.status not in _KINDS:
                    continue
                problem = status.errors[0] if status.errors else None
                kind: Kind = status.status  # type: ignore[assignment]
                facts.append(
                    StatusUpdate(
                        recipient_id=_recipient_id(status.biz_opaque_callback_data),
                        provider_message_id=status.id,
                        kind=kind,
                        at=_moment(status.timestamp),
                        error_code=(
                            str(problem.code) if problem and problem.code is not None else None
                        ),
                        error_message=(problem.title or problem.message) if problem else None,
                    )
                )
            for message in change.value.messages:
                if message.context is None or not message.context.id:
                    continue
                facts.append(
                    StatusUpdate(
                        recipient_id=None,
                        provider_message_id=message.context.id,
                        kind="replied",
                        at=_moment(message.timestamp),
                    )
                )
    return facts
