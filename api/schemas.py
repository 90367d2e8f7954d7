"""Request bodies as msgspec Structs, and turning msgspec's errors into the contract's.

Field names are the contract's camelCase. A validation error names the field as a
JSON path (`throttleConfig.batchSize`, `contacts[3].phone`) and the rule it
breaks, which is read from the model's own constraints, so the message cannot
drift from the model.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.envelope import ApiError, validation_error

T = TypeVar("T")

E164_PATTERN = r"^\+[1-9]\d{6,14}$"
URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Text = Annotated[str, Meta(max_length=500)]
Phone = Annotated[str, Meta(pattern=E164_PATTERN, description="E.164, e.g. +14155550123")]
HttpUrl = Annotated[str, Meta(pattern=URL_PATTERN, max_length=2048)]
Tag = Annotated[str, Meta(min_length=1, max_length=100)]
Tags = Annotated[list[Tag], Meta(max_length=100)]
MessagesPerSecond = Annotated[int, Meta(ge=1, le=1000)]

MessageType = Literal["text", "template", "image", "document"]
AudienceType = Literal["all", "segment", "tags", "contacts"]
ScheduleType = Literal["now", "scheduled", "manual"]
AccountStatus = Literal["connected", "disconnected"]

MAX_CONTACTS_PER_REQUEST = 10_000


# --- accounts -----------------------------------------------------------------------


class AccountCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    phoneNumberId: Annotated[str, Meta(min_length=1, max_length=64)]
    accessToken: Annotated[str, Meta(min_length=1, max_length=4096)]
    apiUrl: HttpUrl | None = None
    status: AccountStatus = "connected"
    messagesPerSecond: MessagesPerSecond = 80


class AccountPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    phoneNumberId: Annotated[str, Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    accessToken: Annotated[str, Meta(min_length=1, max_length=4096)] | UnsetType = UNSET
    apiUrl: HttpUrl | UnsetType | None = UNSET
    status: AccountStatus | UnsetType = UNSET
    messagesPerSecond: MessagesPerSecond | UnsetType = UNSET


# --- contacts -----------------------------------------------------------------------


class ContactBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    phone: Phone
    firstName: Text | None = None
    lastName: Text | None = None
    email: Text | None = None
    company: Text | None = None
    tags: Tags = []
    attributes: dict[str, str] = {}
    optedOut: bool = False


class ContactBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Items are checked one by one, so one bad item is rejected, not the request.
    contacts: Annotated[list[Any], Meta(max_length=MAX_CONTACTS_PER_REQUEST)]


class ContactPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    phone: Phone | UnsetType = UNSET
    firstName: Text | UnsetType | None = UNSET
    lastName: Text | UnsetType | None = UNSET
    email: Text | UnsetType | None = UNSET
    company: Text | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET
    attributes: dict[str, str] | UnsetType = UNSET
    optedOut: bool | UnsetType = UNSET


# --- segments -----------------------------------------------------------------------


class SegmentFilter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tags: Tags | None = None
    contactIds: Annotated[list[uuid.UUID], Meta(max_length=100_000)] | None = None


class SegmentCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    filter: SegmentFilter


# --- campaigns ----------------------------------------------------------------------


class ThrottleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    messagesPerMinute: Annotated[float, Meta(ge=1, le=60_000)] = 20
    batchSize: Annotated[int, Meta(ge=1, le=10_000)] = 100
    # Milliseconds, as in the seed spec.
    delayBetweenBatches: Annotated[int, Meta(ge=0, le=3_600_000)] = 0


class TemplateContent(msgspec.Struct, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=512)]
    language: Annotated[str, Meta(min_length=2, max_length=20)]
    components: list[dict[str, Any]] = []


class SegmentAudience(msgspec.Struct, frozen=True):
    segmentId: uuid.UUID


class TagsAudience(msgspec.Struct, frozen=True):
    tags: Annotated[list[Tag], Meta(min_length=1, max_length=100)]


class ContactsAudience(msgspec.Struct, frozen=True):
    contactIds: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=100_000)]


TemplateVariables = Annotated[
    dict[str, Annotated[str, Meta(max_length=1000)]], Meta(max_length=100)
]


class CampaignCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    accountId: uuid.UUID
    name: Name
    messageType: MessageType
    messageContent: Any  # a string, or TemplateContent for templates
    audienceType: AudienceType
    scheduleType: ScheduleType
    audienceConfig: dict[str, Any] = {}
    mediaUrl: HttpUrl | None = None
    scheduledAt: datetime | None = None
    throttleConfig: ThrottleConfig = ThrottleConfig()
    templateVariables: TemplateVariables = {}


class CampaignPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    accountId: uuid.UUID | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    messageType: MessageType | UnsetType = UNSET
    messageContent: Any = UNSET
    audienceType: AudienceType | UnsetType = UNSET
    audienceConfig: dict[str, Any] | UnsetType = UNSET
    mediaUrl: HttpUrl | UnsetType | None = UNSET
    scheduleType: ScheduleType | UnsetType = UNSET
    scheduledAt: datetime | UnsetType | None = UNSET
    throttleConfig: ThrottleConfig | UnsetType = UNSET
    templateVariables: TemplateVariables | UnsetType = UNSET


class CampaignSettings(msgspec.Struct, frozen=True):
    """A campaign's editable settings once validated together (create, or row + patch)."""

    account_id: str
    name: str
    message_type: str
    message_content: Any
    media_url: str | None
    audience_type: str
    audience_config: dict[str, Any]
    schedule_type: str
    scheduled_at: datetime | None
    throttle_config: dict[str, Any]
    template_variables: dict[str, str]


def throttle_json(throttle: ThrottleConfig) -> dict[str, Any]:
    rate = throttle.messagesPerMinute
    return {
        "messagesPerMinute": int(rate) if float(rate).is_integer() else rate,
        "batchSize": throttle.batchSize,
        "delayBetweenBatches": throttle.delayBetweenBatches,
    }


def check_campaign(
    *,
    account_id: str,
    name: str,
    message_type: str,
    message_content: Any,
    media_url: str | None,
    audience_type: str,
    audience_config: Any,
    schedule_type: str,
    scheduled_at: datetime | None,
    throttle_config: dict[str, Any],
    template_variables: dict[str, str],
) -> CampaignSettings:
    """The cross-field rules; returns the settings in their stored form."""
    content: Any
    if message_type == "template":
        content = msgspec.to_builtins(convert(message_content, TemplateContent, "messageContent"))
    else:
        if not isinstance(message_content, str):
            raise validation_error(
                "messageContent", f"expected a string for messageType {message_type!r}"
            )
        if message_type == "text" and not message_content.strip():
            raise validation_error("messageContent", "expected a non-empty text")
        if len(message_content) > 4096:
            raise validation_error("messageContent", "expected at most 4096 characters")
        content = message_content
    if message_type in ("image", "document") and not media_url:
        raise validation_error("mediaUrl", f"is required for messageType {message_type!r}")
    if not isinstance(audience_config, dict):
        raise validation_error("audienceConfig", "expected an object")
    audience: dict[str, Any]
    match audience_type:
        case "segment":
            segment = convert(audience_config, SegmentAudience, "audienceConfig")
            audience = {"segmentId": str(segment.segmentId)}
        case "tags":
            audience = {"tags": convert(audience_config, TagsAudience, "audienceConfig").tags}
        case "contacts":
            ids = convert(audience_config, ContactsAudience, "audienceConfig").contactIds
            audience = {"contactIds": [str(i) for i in ids]}
        case _:
            audience = {}
    if schedule_type == "scheduled" and scheduled_at is None:
        raise validation_error("scheduledAt", 'is required when scheduleType is "scheduled"')
    if scheduled_at is not None and scheduled_at.tzinfo is None:
        scheduled_at = scheduled_at.replace(tzinfo=UTC)  # a time without offset is UTC
    return CampaignSettings(
        account_id=account_id,
        name=name,
        message_type=message_type,
        message_content=content,
        media_url=media_url,
        audience_type=audience_type,
        audience_config=audience,
        schedule_type=schedule_type,
        scheduled_at=scheduled_at if schedule_type != "now" else None,
        throttle_config=throttle_config,
        template_variables=template_variables,
    )


# --- decoding -----------------------------------------------------------------------


def decode(body: bytes, model: type[T]) -> T:
    """Decode a request body; malformed JSON and failed validation become 400s."""
    if not body.strip():
        raise ApiError(400, "malformed_json", "The request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as error:
        raise _validation(error, model, "") from None
    except msgspec.DecodeError as error:
        raise ApiError(
            400, "malformed_json", f"The request body is not valid JSON: {error}"
        ) from None


def decode_any(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "malformed_json", "The request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise ApiError(
            400, "malformed_json", f"The request body is not valid JSON: {error}"
        ) from None


def convert(value: Any, model: type[T], prefix: str) -> T:
    """Validate already-decoded JSON (a part of a body) against `model`."""
    try:
        return msgspec.convert(value, model)
    except msgspec.ValidationError as error:
        raise _validation(error, model, prefix) from None


def validation_reason(error: msgspec.ValidationError, model: type[Any], prefix: str = "") -> str:
    """`field: rule`, for per-item rejections."""
    return _validation(error, model, prefix).message


_LOCATION = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`")
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _validation(error: msgspec.ValidationError, model: type[Any], prefix: str) -> ApiError:
    match = _LOCATION.match(str(error))
    assert match is not None
    text, path = match["text"], match["path"] or ""
    # A bad dict value is reported at `$.x[...]`: name the dict and its rule.
    path = path.split("[...]", 1)[0]
    steps: list[str | int] = [name if name else int(index) for name, index in _TOKEN.findall(path)]
    if (missing := _MISSING.match(text)) is not None:
        field, rule = _join(prefix, [*steps, missing["name"]]), "is required"
    elif (unknown := _UNKNOWN.match(text)) is not None:
        known = _known_fields(_type_at(msgspec.inspect.type_info(model), steps))
        field = _join(prefix, [*steps, unknown["name"]])
        rule = "is not a known field" + (f" (expected one of: {', '.join(known)})" if known else "")
    else:
        field = _join(prefix, steps)
        target = _type_at(msgspec.inspect.type_info(model), steps)
        rule = (_describe(target) if target is not None else None) or _lower_first(text)
    if not field:
        return ApiError(400, "validation_failed", f"The request body: {rule}")
    return validation_error(field, rule)


def _join(prefix: str, steps: list[str | int]) -> str:
    out = prefix
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out = f"{out}.{step}" if out else step
    return out


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _strip_optional(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    if isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        useful = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(useful) == 1:
            return _strip_optional(useful[0])
    return info


def _type_at(
    info: msgspec.inspect.Type | None, steps: list[str | int]
) -> msgspec.inspect.Type | None:
    for step in steps:
        if info is None:
            return None
        info = _strip_optional(info)
        if isinstance(step, int) and isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        elif isinstance(step, str) and isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == step), None)
        elif isinstance(step, str) and isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        else:
            return None
    return _strip_optional(info) if info is not None else None


def _known_fields(info: msgspec.inspect.Type | None) -> list[str]:
    if isinstance(info, msgspec.inspect.StructType):
        return [f.encode_name for f in info.fields]
    return []


# msgspec sorts a Literal's values; messages list them in the contract's order.
_LITERAL_ORDER: dict[frozenset[Any], tuple[Any, ...]] = {
    frozenset(get_args(alias)): get_args(alias)
    for alias in (MessageType, AudienceType, ScheduleType, AccountStatus)
}

_PATTERN_RULES = {
    E164_PATTERN: "expected an E.164 phone number such as +14155550123",
    URL_PATTERN: "expected an http or https URL",
}


def _bounds(low: float | None, high: float | None) -> str:
    def show(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    if low is not None and high is not None:
        return f" from {show(low)} to {show(high)}"
    if low is not None:
        return f" of at least {show(low)}"
    if high is not None:
        return f" of at most {show(high)}"
    return ""


def _describe(info: msgspec.inspect.Type) -> str | None:
    """The rule a value of this type must follow, in words."""
    i = msgspec.inspect
    match info:
        case i.IntType():
            return "expected an integer" + _bounds(info.ge, info.le)
        case i.FloatType():
            return "expected a number" + _bounds(info.ge, info.le)
        case i.BoolType():
            return "expected true or false"
        case i.StrType(pattern=str(pattern)):
            return _PATTERN_RULES.get(pattern, f"expected a string matching {pattern}")
        case i.StrType(min_length=low, max_length=high):
            if low:
                return (
                    f"expected a non-empty string of at most {high} characters"
                    if high
                    else ("expected a non-empty string")
                )
            return (
                f"expected a string of at most {high} characters" if high else "expected a string"
            )
        case i.LiteralType():
            values = _LITERAL_ORDER.get(frozenset(info.values), info.values)
            return "expected one of " + ", ".join(f'"{v}"' for v in values)
        case i.UUIDType():
            return "expected a UUID"
        case i.DateTimeType():
            return "expected an ISO-8601 date-time such as 2025-11-05T10:00:00Z"
        case i.ListType(min_length=low, max_length=high):
            item = _describe(_strip_optional(info.item_type))
            what = "expected an array" + _bounds(low or None, high).replace(" from ", " of ")
            what += " items" if low or high else ""
            return what + (f" (each: {item.removeprefix('expected ')})" if item else "")
        case i.DictType():
            each = _describe(_strip_optional(info.value_type))
            return "expected an object" + (
                f" whose values are each {each.removeprefix('expected ')}" if each else ""
            )
        case i.StructType():
            return "expected an object"
    return None


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
