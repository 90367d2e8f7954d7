"""WhatsApp Cloud API webhook payloads → `StatusUpdate` facts. Pure: no I/O.

The envelope (`entry[].changes[]`) must have its documented shape, else the
body is not a notification (`MalformedPayload`). Below it every status and
reply is judged alone: one that is malformed or could not be stored (a NUL
character, a number out of range, a wrong type) is refused and counted, and
never costs the others. So the SQL that applies facts never sees a value it
cannot store. Only the fields we use are modelled; msgspec ignores the rest,
so fields Meta adds break nothing. Changes whose `field` is not `messages`
(template, quality and account updates) carry no statuses and are left alone.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Literal

import msgspec

from engine.core.callback_reference import CallbackReferences
from engine.messages import StatusUpdate

# --- the envelope ----------------------------------------------------------------------


class _Change(msgspec.Struct, frozen=True):
    field: str | None = None
    value: msgspec.Raw = msgspec.Raw(b"{}")


class _Entry(msgspec.Struct, frozen=True):
    changes: list[_Change] = []


class _Notification(msgspec.Struct, frozen=True):
    entry: list[_Entry]


# --- one change's value, and the items in it, each decoded on its own -----------------------


class _Metadata(msgspec.Struct, frozen=True):
    phone_number_id: str | None = None


class _Value(msgspec.Struct, frozen=True):
    metadata: _Metadata | None = None
    statuses: list[msgspec.Raw] = []
    messages: list[msgspec.Raw] = []


class _Error(msgspec.Struct, frozen=True):
    code: int | str | None = None
    title: str | None = None
    message: str | None = None


class _Status(msgspec.Struct, frozen=True):
    id: str
    status: str
    timestamp: str | int
    errors: list[_Error] = []
    biz_opaque_callback_data: str | None = None


class _Context(msgspec.Struct, frozen=True):
    id: str | None = None


class _Inbound(msgspec.Struct, frozen=True):
    timestamp: str | int
    context: _Context | None = None


_decode_notification = msgspec.json.Decoder(_Notification).decode
_decode_value = msgspec.json.Decoder(_Value).decode
_decode_status = msgspec.json.Decoder(_Status).decode
_decode_inbound = msgspec.json.Decoder(_Inbound).decode

_KINDS: dict[str, Literal["sent", "delivered", "read", "failed"]] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
}
# Indexed in PostgreSQL, whose btree entries are bounded; wamids are ~60 characters.
_MAX_WAMID_CHARS = 512
# datetime's range (year 9999), which timestamptz also holds.
_MAX_UNIX_SECONDS = 253_402_300_799
_MAX_TIMESTAMP_DIGITS = len(str(_MAX_UNIX_SECONDS))


class MalformedPayload(Exception):
    """The body is not a Cloud API notification. `field` is the JSON path at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ParsedNotification(msgspec.Struct, frozen=True):
    facts: list[StatusUpdate]
    # Statuses and replies refused: malformed, or holding a value that cannot be stored.
    refused: int


# --- signatures ------------------------------------------------------------------------


def signature_valid(secret: str, body: bytes, header: bytes | str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex>` over the raw body, compared in constant time.

    Any bytes are accepted in the header (a value that is not ASCII is just wrong)."""
    if not header:
        return False
    given = header if isinstance(header, bytes) else header.encode("latin-1", "replace")
    if given[:7].lower() != b"sha256=":
        return False
    expected = hmac.digest(secret.encode(), body, hashlib.sha256).hex().encode()
    return hmac.compare_digest(expected, given[7:].strip().lower())


def sign(secret: str, body: bytes) -> str:
    """The header value Meta would send for `body` (for tests and the simulator)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- parsing ---------------------------------------------------------------------------


def parse_notification(body: bytes, references: CallbackReferences) -> ParsedNotification:
    """The facts a notification carries: statuses (sent, delivered, read, failed) and
    replies (inbound messages with `context.id`, the wamid they answer).

    `references` verifies `biz_opaque_callback_data`; a value we did not issue is
    ignored and the status is matched by its wamid alone."""
    try:
        notification = _decode_notification(body)
    except msgspec.ValidationError as error:
        message, field = _explain(str(error))
        raise MalformedPayload(message, field) from None
    except msgspec.DecodeError as error:
        raise MalformedPayload(f"the body is not JSON ({error})") from None
    facts: list[StatusUpdate] = []
    refused = 0
    for entry in notification.entry:
        for change in entry.changes:
            if change.field not in (None, "messages"):
                continue
            try:
                value = _decode_value(change.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                refused += 1
                continue
            phone_number_id = value.metadata.phone_number_id if value.metadata else None
            if phone_number_id is None:
                # Strict matching needs the number; without it nothing here can apply.
                refused += len(value.statuses) + len(value.messages)
                continue
            for raw in value.statuses:
                fact, ok = _status_fact(raw, phone_number_id, references)
                if fact is not None:
                    facts.append(fact)
                refused += not ok
            for raw in value.messages:
                fact, ok = _reply_fact(raw, phone_number_id)
                if fact is not None:
                    facts.append(fact)
                refused += not ok
    return ParsedNotification(facts, refused)


def _status_fact(
    raw: msgspec.Raw, phone_number_id: str, references: CallbackReferences
) -> tuple[StatusUpdate | None, bool]:
    """(fact, True), (None, True) for a status we do not track, (None, False) if refused."""
    try:
        status = _decode_status(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None, False
    kind = _KINDS.get(status.status)
    if kind is None:
        return None, True  # e.g. "deleted", "warning": nothing we track
    at = _moment(status.timestamp)
    if at is None or not _storable_wamid(status.id):
        return None, False
    error_code = error_message = None
    if status.errors:
        problem = status.errors[0]
        error_code = None if problem.code is None else str(problem.code)
        error_message = problem.title or problem.message
        if not (_storable(error_code) and _storable(error_message)):
            return None, False
    return (
        StatusUpdate(
            recipient_id=references.recipient_id(status.biz_opaque_callback_data),
            provider_message_id=status.id,
            kind=kind,
            at=at,
            error_code=error_code,
            error_message=error_message,
            phone_number_id=phone_number_id,
        ),
        True,
    )


def _reply_fact(raw: msgspec.Raw, phone_number_id: str) -> tuple[StatusUpdate | None, bool]:
    try:
        message = _decode_inbound(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None, False
    if message.context is None or message.context.id is None:
        return None, True  # not a reply to one of our messages
    at = _moment(message.timestamp)
    if at is None or not _storable_wamid(message.context.id):
        return None, False
    return (
        StatusUpdate(
            recipient_id=None,
            provider_message_id=message.context.id,
            kind="replied",
            at=at,
            phone_number_id=phone_number_id,
        ),
        True,
    )


def _moment(timestamp: str | int) -> datetime | None:
    """Unix seconds (Meta sends a string of ASCII digits), or None if out of range."""
    if isinstance(timestamp, str):
        # isdigit() alone accepts "²"; int() alone accepts " 1_0 ".
        if not (timestamp.isascii() and timestamp.isdigit()):
            return None
        if len(timestamp) > _MAX_TIMESTAMP_DIGITS:
            return None
        timestamp = int(timestamp)
    if not 0 <= timestamp <= _MAX_UNIX_SECONDS:
        return None
    return datetime.fromtimestamp(timestamp, UTC)


def _storable(text: str | None) -> bool:
    """PostgreSQL text cannot hold NUL."""
    return text is None or "\x00" not in text


def _storable_wamid(wamid: str) -> bool:
    return 0 < len(wamid) <= _MAX_WAMID_CHARS and "\x00" not in wamid


def _explain(error: str) -> tuple[str, str | None]:
    """msgspec's "Expected `array`, got `object` - at `$.entry`" → a sentence and the path."""
    rule, at, path = error.partition(" - at `$")
    field = path.rstrip("`").lstrip(".") if at else ""
    if rule.startswith("Object missing required field `"):
        missing = rule.removeprefix("Object missing required field `").rstrip("`")
        field = f"{field}.{missing}" if field else missing
        return f"{field}: required", field
    rule = rule[:1].lower() + rule[1:]
    return (f"{field}: {rule}" if field else f"the body: {rule}"), (field or None)
