"""WhatsApp Cloud API webhook payloads → `StatusUpdate` facts. Pure: no I/O.

The envelope (`entry[].changes[]`) must have its documented shape, else the
body is not a notification (`MalformedPayload`). Below it every status and
reply is judged alone: one that is malformed or could not be stored (a NUL
character, a number out of range, a wrong type) is refused and counted, and
never costs the others. So the SQL that applies facts never sees a value it
cannot store. Only the fields we use are modelled; msgspec ignores the rest,
so fields Meta adds break nothing. Template, quality and account updates
become signal facts (`TemplateStatusSignal`, `QualitySignal`, `AccountSignal`),
each judged alone the same way; changes of any other `field` are left alone.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Literal

import msgspec

from engine.core.callback_reference import CallbackReferences
from engine.messages import (
    AccountSignal,
    Pricing,
    QualitySignal,
    Signal,
    StatusUpdate,
    TemplateStatusSignal,
    WebhookFact,
)

# --- the envelope ----------------------------------------------------------------------


class _Change(msgspec.Struct, frozen=True):
    field: str | None = None
    value: msgspec.Raw = msgspec.Raw(b"{}")


class _Entry(msgspec.Struct, frozen=True):
    id: str | int | None = None  # the WhatsApp Business Account (WABA) id
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


class _Pricing(msgspec.Struct, frozen=True):
    billable: bool | None = None
    pricing_model: str | None = None
    category: str | None = None
    type: str | None = None


class _Status(msgspec.Struct, frozen=True):
    id: str
    status: str
    timestamp: str | int
    errors: list[_Error] = []
    biz_opaque_callback_data: str | None = None
    # Decoded on its own: a pricing we cannot read must not cost the status.
    pricing: msgspec.Raw = msgspec.Raw(b"null")


class _Context(msgspec.Struct, frozen=True):
    id: str | None = None


class _Inbound(msgspec.Struct, frozen=True):
    timestamp: str | int
    context: _Context | None = None


_decode_notification = msgspec.json.Decoder(_Notification).decode
_decode_value = msgspec.json.Decoder(_Value).decode
_decode_status = msgspec.json.Decoder(_Status).decode
_decode_inbound = msgspec.json.Decoder(_Inbound).decode
_decode_pricing = msgspec.json.Decoder(_Pricing | None).decode

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
    # Statuses, replies and signals refused: malformed, or holding a value that
    # cannot be stored.
    refused: int
    signals: list[Signal] = []  # template, quality and account updates

    def all_facts(self) -> list[WebhookFact]:
        """What the webhook applier takes."""
        return [*self.facts, *self.signals]


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
    """The facts a notification carries: statuses (sent, delivered, read, failed),
    replies (inbound messages with `context.id`, the wamid they answer) and signals
    (template, quality and account updates, engine/core/signals.py).

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
    signals: list[Signal] = []
    refused = 0
    for entry in notification.entry:
        waba_id = None if entry.id is None else str(entry.id)
        for change in entry.changes:
            if change.field in _SIGNAL_PARSERS:
                signal = _signal_fact(change.field, change.value, waba_id)
                if signal is not None:
                    signals.append(signal)
                refused += signal is None
                continue
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
    return ParsedNotification(facts, refused, signals)


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
            pricing=_pricing(status.pricing),
        ),
        True,
    )


def _pricing(raw: msgspec.Raw) -> Pricing | None:
    """The status's pricing; None without one, or when it is malformed or cannot be
    stored (the status still counts: pricing is a detail of it)."""
    try:
        given = _decode_pricing(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if given is None:
        return None
    if not all(_short_text(text) for text in (given.category, given.pricing_model, given.type)):
        return None
    return Pricing(
        category=given.category,
        billable=given.billable,
        pricing_model=given.pricing_model,
        type=given.type,
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


# --- signals: template, quality and account updates ---------------------------------------


class _TemplateValue(msgspec.Struct, frozen=True):
    event: str
    message_template_name: str
    message_template_language: str | None = None
    message_template_id: int | str | None = None
    reason: str | None = None
    metadata: _Metadata | None = None


class _QualityValue(msgspec.Struct, frozen=True):
    event: str
    display_phone_number: str | None = None
    current_limit: str | None = None
    old_limit: str | None = None
    max_daily_conversations_per_business: str | None = None
    metadata: _Metadata | None = None


class _Restriction(msgspec.Struct, frozen=True):
    restriction_type: str


class _BanInfo(msgspec.Struct, frozen=True):
    waba_ban_state: str | None = None


class _ViolationInfo(msgspec.Struct, frozen=True):
    violation_type: str | None = None


class _AccountValue(msgspec.Struct, frozen=True):
    event: str
    phone_number: str | None = None
    restriction_info: list[_Restriction] = []
    ban_info: _BanInfo | None = None
    violation_info: _ViolationInfo | None = None
    metadata: _Metadata | None = None


# Meta's names are short (events, tiers, languages, ids); template names at most 512.
_MAX_SHORT_CHARS = 128
_MAX_NAME_CHARS = 512
# What one signal may keep of its value in the event log.
_MAX_CONTENT_BYTES = 16_384

_decode_any = msgspec.json.Decoder().decode
_encode_any = msgspec.json.Encoder().encode


def _signal_fact(field: str, raw: msgspec.Raw, waba_id: str | None) -> Signal | None:
    """The signal a change carries, or None when it is refused: malformed, not
    storable, or naming neither a WABA nor a phone number (nothing could match)."""
    try:
        # Re-encoded: the log stores it as jsonb, which must not hold NUL, and keeps
        # it compact. A lone surrogate or a bad escape fails to decode here.
        content = _encode_any(_decode_any(raw))
        fact = _SIGNAL_PARSERS[field](raw, waba_id, content)
    except (msgspec.ValidationError, msgspec.DecodeError, _Unstorable):
        return None
    if b"\\u0000" in content or len(content) > _MAX_CONTENT_BYTES:
        return None
    if not (_short_text(waba_id) and _short_text(fact.phone_number_id)):
        return None
    if fact.business_account_id is None and fact.phone_number_id is None:
        return None
    return fact


class _Unstorable(Exception):
    pass


def _text(value: str | None, limit: int = _MAX_SHORT_CHARS) -> str | None:
    if value is not None and not (len(value) <= limit and "\x00" not in value):
        raise _Unstorable
    return value


def _event(value: str) -> str:
    if not value:
        raise _Unstorable
    return _text(value) or ""


def _number(metadata: _Metadata | None) -> str | None:
    return metadata.phone_number_id if metadata is not None else None


def _template_signal(raw: msgspec.Raw, waba_id: str | None, content: bytes) -> Signal:
    value = msgspec.json.decode(raw, type=_TemplateValue)
    template_id = value.message_template_id
    if not value.message_template_name:
        raise _Unstorable
    return TemplateStatusSignal(
        business_account_id=waba_id,
        event=_event(value.event),
        template_name=_text(value.message_template_name, _MAX_NAME_CHARS) or "",
        template_language=_text(value.message_template_language) or None,
        template_id=_text(None if template_id is None else str(template_id)),
        reason=_text(value.reason, _MAX_NAME_CHARS),
        content=content,
        phone_number_id=_number(value.metadata),
    )


def _quality_signal(raw: msgspec.Raw, waba_id: str | None, content: bytes) -> Signal:
    value = msgspec.json.decode(raw, type=_QualityValue)
    return QualitySignal(
        business_account_id=waba_id,
        event=_event(value.event),
        display_phone_number=_text(value.display_phone_number),
        current_limit=_text(value.current_limit),
        old_limit=_text(value.old_limit),
        content=content,
        phone_number_id=_number(value.metadata),
        max_daily_limit=_text(value.max_daily_conversations_per_business),
    )


def _account_signal(raw: msgspec.Raw, waba_id: str | None, content: bytes) -> Signal:
    value = msgspec.json.decode(raw, type=_AccountValue)
    return AccountSignal(
        business_account_id=waba_id,
        event=_event(value.event),
        phone_number=_text(value.phone_number),
        restriction_types=tuple(_text(r.restriction_type) or "" for r in value.restriction_info),
        ban_state=_text(value.ban_info.waba_ban_state) if value.ban_info else None,
        violation_type=_text(value.violation_info.violation_type) if value.violation_info else None,
        content=content,
        phone_number_id=_number(value.metadata),
    )


_SIGNAL_PARSERS = {
    "message_template_status_update": _template_signal,
    "phone_number_quality_update": _quality_signal,
    "account_update": _account_signal,
}


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


def _short_text(text: str | None) -> bool:
    return text is None or (len(text) <= _MAX_SHORT_CHARS and "\x00" not in text)


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
