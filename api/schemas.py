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

from api import nesting
from api.envelope import ApiError, validation_error
from engine.core import send_window
from engine.core.ab_winner import WinnerMetric
from engine.core.retarget import Audience as RetargetAudience
from engine.core.variant_content import variant_problem

T = TypeVar("T")

E164_PATTERN = r"^\+[1-9]\d{6,14}$"
URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Phone = Annotated[str, Meta(pattern=E164_PATTERN, description="E.164, e.g. +14155550123")]
HttpUrl = Annotated[str, Meta(pattern=URL_PATTERN, max_length=2048)]
# Both go into every Cloud API request: the id into its path, the token into a header.
PHONE_NUMBER_ID_PATTERN = r"^[0-9A-Za-z_-]+$"
ACCESS_TOKEN_PATTERN = r"^[!-~]+$"
PhoneNumberId = Annotated[str, Meta(min_length=1, max_length=64, pattern=PHONE_NUMBER_ID_PATTERN)]
AccessToken = Annotated[str, Meta(min_length=1, max_length=4096, pattern=ACCESS_TOKEN_PATTERN)]
Tag = Annotated[str, Meta(min_length=1, max_length=100)]
Tags = Annotated[list[Tag], Meta(max_length=100)]
MessagesPerSecond = Annotated[int, Meta(ge=1, le=1000)]
# The WhatsApp Business Account id (digits in Meta's answers), which signals name.
BusinessAccountId = (
    Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")] | None
)

# WhatsApp's messaging limit (docs/delivery-guarantees.md): accounts of one portfolio
# share the smallest limit set among them; unset (null) is unlimited.
PortfolioId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")] | None
MessagingLimit = (
    Annotated[
        int,
        Meta(
            ge=1, le=100_000_000, description="Unique users per moving 24 hours; null: unlimited."
        ),
    ]
    | None
)

MessageType = Literal["text", "template", "image", "document"]
AudienceType = Literal["all", "segment", "tags", "contacts"]
ScheduleType = Literal["now", "scheduled", "manual"]
AccountStatus = Literal["connected", "disconnected"]

MAX_CONTACTS_PER_REQUEST = 10_000

# Contacts (documented in the OpenAPI document through the descriptions below).
MAX_CONTACT_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_LENGTH = 64
MAX_ATTRIBUTE_VALUE_LENGTH = 1024
PersonName = Annotated[
    Annotated[str, Meta(max_length=100)] | None, Meta(description="At most 100 characters.")
]
Company = Annotated[
    Annotated[str, Meta(max_length=200)] | None, Meta(description="At most 200 characters.")
]
# RFC 5321's limit for an address.
Email = Annotated[
    Annotated[str, Meta(max_length=254)] | None, Meta(description="At most 254 characters.")
]
ContactTags = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=MAX_TAG_LENGTH)]],
    Meta(
        max_length=MAX_CONTACT_TAGS,
        description=f"At most {MAX_CONTACT_TAGS} tags of 1 to {MAX_TAG_LENGTH} characters.",
    ),
]
Attributes = Annotated[
    dict[
        Annotated[str, Meta(min_length=1, max_length=MAX_ATTRIBUTE_KEY_LENGTH)],
        Annotated[str, Meta(max_length=MAX_ATTRIBUTE_VALUE_LENGTH)],
    ],
    Meta(
        max_length=MAX_ATTRIBUTES,
        description=f"At most {MAX_ATTRIBUTES} attributes; keys of 1 to "
        f"{MAX_ATTRIBUTE_KEY_LENGTH} characters, values of at most "
        f"{MAX_ATTRIBUTE_VALUE_LENGTH:,} characters. Template variables by these names.",
    ),
]


# --- accounts -----------------------------------------------------------------------


class AccountCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    phoneNumberId: PhoneNumberId
    accessToken: AccessToken
    apiUrl: HttpUrl | None = None
    status: AccountStatus = "connected"
    messagesPerSecond: MessagesPerSecond = 80
    businessAccountId: BusinessAccountId = None
    portfolioId: PortfolioId = None
    messagingLimit: MessagingLimit = None


class AccountPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    phoneNumberId: PhoneNumberId | UnsetType = UNSET
    accessToken: AccessToken | UnsetType = UNSET
    apiUrl: HttpUrl | UnsetType | None = UNSET
    status: AccountStatus | UnsetType = UNSET
    messagesPerSecond: MessagesPerSecond | UnsetType = UNSET
    businessAccountId: BusinessAccountId | UnsetType = UNSET
    portfolioId: PortfolioId | UnsetType = UNSET
    messagingLimit: MessagingLimit | UnsetType = UNSET


# --- contacts -----------------------------------------------------------------------


class ContactBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    phone: Phone
    firstName: PersonName = None
    lastName: PersonName = None
    email: Email = None
    company: Company = None
    tags: ContactTags = []
    attributes: Attributes = {}
    optedOut: bool = False


class ContactBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Items are checked one by one, so one bad item is rejected, not the request.
    contacts: Annotated[
        list[Any],
        Meta(
            max_length=MAX_CONTACTS_PER_REQUEST,
            description=f"At most {MAX_CONTACTS_PER_REQUEST:,} contacts (ContactBody), applied"
            " in order: an entry that breaks a rule is reported in `rejected` and not stored.",
        ),
    ]


class ContactPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    phone: Phone | UnsetType = UNSET
    firstName: PersonName | UnsetType = UNSET
    lastName: PersonName | UnsetType = UNSET
    email: Email | UnsetType = UNSET
    company: Company | UnsetType = UNSET
    tags: ContactTags | UnsetType = UNSET
    attributes: Attributes | UnsetType = UNSET
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


class TemplateParameter(msgspec.Struct, frozen=True):
    """What every Cloud API template parameter has; its other fields depend on its
    `type` (currency, date_time, image, ...) and are stored as given."""

    type: Annotated[str, Meta(min_length=1, max_length=64)]
    text: Annotated[str, Meta(max_length=4096)] | None = None


class TemplateComponent(msgspec.Struct, frozen=True):
    """A header, body or button component; other fields (sub_type, index) as given."""

    type: Annotated[str, Meta(min_length=1, max_length=64)]
    parameters: Annotated[list[TemplateParameter], Meta(max_length=100)] = []


class TemplateContent(msgspec.Struct, frozen=True):
    name: Annotated[str, Meta(min_length=1, max_length=512)]
    language: Annotated[str, Meta(min_length=2, max_length=20)]
    components: Annotated[list[TemplateComponent], Meta(max_length=50)] = []


class SegmentAudience(msgspec.Struct, frozen=True):
    segmentId: uuid.UUID


class TagsAudience(msgspec.Struct, frozen=True):
    tags: Annotated[list[Tag], Meta(min_length=1, max_length=100)]


class ContactsAudience(msgspec.Struct, frozen=True):
    contactIds: Annotated[list[uuid.UUID], Meta(min_length=1, max_length=100_000)]


TemplateVariables = Annotated[
    dict[str, Annotated[str, Meta(max_length=1000)]], Meta(max_length=100)
]


WindowTime = Annotated[
    str, Meta(pattern=send_window.HHMM, description='Local time, "HH:MM" (00:00 to 23:59).')
]


class SendWindowBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The local hours a recipient may be messaged; `start` after `end` crosses
    midnight. A contact's `timezone` attribute overrides `timezone` (UTC if unset)."""

    start: WindowTime
    end: WindowTime
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] | None = None


def send_window_json(window: SendWindowBody | None) -> dict[str, Any] | None:
    """The stored form of `sendWindow`, after the rules its fields cannot say alone."""
    if window is None:
        return None
    if window.start == window.end:
        raise validation_error("sendWindow.end", "must differ from sendWindow.start")
    if window.timezone is not None and send_window.zone(window.timezone) is None:
        raise validation_error(
            "sendWindow.timezone", "expected an IANA time zone name, e.g. Europe/Berlin"
        )
    return {"start": window.start, "end": window.end, "timezone": window.timezone}


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
    trackLinks: bool = False
    # Start even when some recipients lack a variable (it renders empty).
    allowMissingVariables: bool = False
    # A/B variants, each with its own message; see check_variants.
    variants: Variants | None = None
    abTest: AbTestBody | None = None
    # Local hours to send in (engine/core/send_window.py); null: any time.
    sendWindow: SendWindowBody | None = None


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
    trackLinks: bool | UnsetType = UNSET
    allowMissingVariables: bool | UnsetType = UNSET
    sendWindow: SendWindowBody | UnsetType | None = UNSET


PreviewVariables = Annotated[
    dict[
        Annotated[str, Meta(min_length=1, max_length=MAX_ATTRIBUTE_KEY_LENGTH)],
        Annotated[str, Meta(max_length=MAX_ATTRIBUTE_VALUE_LENGTH)],
    ],
    Meta(
        max_length=MAX_ATTRIBUTES,
        description="The variables of a made-up contact (as a contact's fields and"
        " attributes); not with contactId.",
    ),
]


class CampaignPreview(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Render for one of your contacts, or for the given variables; neither: the
    campaign's templateVariables defaults only."""

    contactId: uuid.UUID | None = None
    variables: PreviewVariables | None = None


class CampaignTestSend(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Send the preview once to `phone`; it is no recipient and counts in no stats."""

    phone: Phone
    contactId: uuid.UUID | None = None
    variables: PreviewVariables | None = None


class CampaignRetarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A new draft with this campaign's recipients in `audience`, frozen now."""

    audience: RetargetAudience
    name: Name | None = None
    messageContent: Any = None  # as the campaign's messageType takes it; default: its own


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
    track_links: bool = False  # its URLs and links.base_url are the engine's to check


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
    track_links: bool = False,
) -> CampaignSettings:
    """The cross-field rules; returns the settings in their stored form."""
    content = checked_content(message_type, message_content, "messageContent")
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
    if scheduled_at is not None:
        try:
            scheduled_at.astimezone(UTC)
        except OverflowError:
            raise validation_error(
                "scheduledAt", "expected a date-time from year 1 to 9999 once in UTC"
            ) from None
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
        track_links=track_links,
    )


def checked_content(message_type: str, message_content: Any, field: str) -> Any:
    """A message content (at `field`) checked for `message_type`, in stored form."""
    content: Any
    if message_type == "template":
        template = convert(message_content, TemplateContent, field)
        # Checked against the model, stored as given: parameters carry fields by type.
        content = {
            "name": template.name,
            "language": template.language,
            "components": message_content.get("components", []),
        }
    else:
        if not isinstance(message_content, str):
            raise validation_error(field, f"expected a string for messageType {message_type!r}")
        if message_type == "text" and not message_content.strip():
            raise validation_error(field, "expected a non-empty text")
        if len(message_content) > 4096:
            raise validation_error(field, "expected at most 4096 characters")
        content = message_content
    return content


# --- A/B variants -------------------------------------------------------------------


class VariantBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    messageContent: Any  # as the campaign's messageType takes it
    weight: Annotated[float, Meta(gt=0, le=1_000_000)]


class AbTestBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Send to a sample first (split by weight), then the winner to the rest."""

    sampleShare: Annotated[float, Meta(gt=0, lt=1)]
    metric: WinnerMetric
    decideAfterMinutes: Annotated[float, Meta(gt=0, le=43_200)]  # at most 30 days


Variants = Annotated[
    list[VariantBody],
    Meta(
        min_length=2,
        max_length=5,
        description="A/B variants: each recipient gets one, by weight, deterministically"
        " (docs/http-api.md, A/B variants); names unique, each messageContent as the"
        " campaign's messageType takes it.",
    ),
]


def check_variants(
    variants: list[VariantBody] | None,
    ab_test: AbTestBody | None,
    checked: CampaignSettings,
    *,
    links_base_url: str | None,
) -> dict[str, Any]:
    """The A/B fields of a campaign (`checked`: its other settings) in stored form:
    `{"variants": [{name, messageContent, weight}], "ab_test": {...} | None}`. Each
    messageContent is checked as the campaign's own is, and must render."""
    if variants is None:
        if ab_test is not None:
            raise validation_error("abTest", "needs variants (2 to 5) to test")
        return {"variants": [], "ab_test": None}
    stored: list[dict[str, Any]] = []
    names: dict[str, int] = {}
    for index, variant in enumerate(variants):
        at = f"variants[{index}]"
        if variant.name in names:
            raise validation_error(
                f"{at}.name", f"must be unique; variants[{names[variant.name]}] has the same name"
            )
        names[variant.name] = index
        field = f"{at}.messageContent"
        content = checked_content(checked.message_type, variant.messageContent, field)
        reason = variant_problem(
            checked.message_type,
            content,
            checked.media_url,
            checked.template_variables,
            track_links=checked.track_links,
            links_base_url=links_base_url,
        )
        if reason is not None:
            raise validation_error(field, reason)
        weight = variant.weight
        stored.append(
            {
                "name": variant.name,
                "messageContent": content,
                "weight": int(weight) if float(weight).is_integer() else weight,
            }
        )
    test = None
    if ab_test is not None:
        if ab_test.metric == "click_rate" and not checked.track_links:
            raise validation_error("abTest.metric", '"click_rate" needs trackLinks: true')
        test = msgspec.to_builtins(ab_test)
    return {"variants": stored, "ab_test": test}


# --- decoding -----------------------------------------------------------------------


def decode(body: bytes, model: type[T]) -> T:
    """Decode a request body; malformed JSON and failed validation become 400s."""
    _check_at_the_door(body)
    try:
        value = msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as error:
        raise _validation(error, model, "") from None
    except msgspec.DecodeError as error:
        raise ApiError(
            400, "malformed_json", f"The request body is not valid JSON: {error}"
        ) from None
    if b"\\u0000" in body:
        _check_no_nul(msgspec.to_builtins(value), "")
    return value


def decode_any(body: bytes) -> Any:
    """Decode a request body whose parts are validated later (with `convert`)."""
    _check_at_the_door(body)
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise ApiError(
            400, "malformed_json", f"The request body is not valid JSON: {error}"
        ) from None


def convert(value: Any, model: type[T], prefix: str, *, parts_checked_later: bool = False) -> T:
    """Validate already-decoded JSON (a part of a body) against `model`.
    `parts_checked_later`: some of it is converted on its own later (the items of
    a contact batch, each rejected alone), so do not refuse it for what they hold."""
    try:
        converted = msgspec.convert(value, model)
    except msgspec.ValidationError as error:
        raise _validation(error, model, prefix) from None
    if not parts_checked_later:
        _check_no_nul(value, prefix)
    return converted


def _check_at_the_door(body: bytes) -> None:
    if not body.strip():
        raise ApiError(400, "malformed_json", "The request body is empty; expected a JSON object")
    field = nesting.too_deep(body)
    if field is not None:
        rule = f"nested deeper than {nesting.MAX_DEPTH} levels"
        if not field:
            raise ApiError(400, "validation_failed", f"The request body: {rule}")
        raise validation_error(field, rule)


# The code of a value PostgreSQL cannot store, as api/app.py answers Unstorable.
_UNSTORABLE = "invalid_value"


def _check_no_nul(value: Any, prefix: str) -> None:
    """PostgreSQL text cannot hold NUL (U+0000): name the first field that does."""
    pending: list[tuple[str, Any]] = [(prefix, value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise validation_error(path, "must not contain NUL characters", _UNSTORABLE)
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "\x00" in key:
                    raise validation_error(
                        path, "must not contain NUL characters in its keys", _UNSTORABLE
                    )
                pending.append((child_path, child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


# "... - at `$.a.b`", or "... - at `key` in `$.a`" for a dict's key.
_LOCATION = re.compile(r"^(?P<text>.*?)(?: - at (?:`key` in )?`\$(?P<path>[^`]*)`)?$", re.DOTALL)
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
    for alias in (
        MessageType,
        AudienceType,
        ScheduleType,
        AccountStatus,
        RetargetAudience,
        WinnerMetric,
    )
}

_PATTERN_RULES = {
    E164_PATTERN: "expected an E.164 phone number such as +14155550123",
    URL_PATTERN: "expected an http or https URL",
    PHONE_NUMBER_ID_PATTERN: "expected letters, digits, '-' or '_' (WhatsApp's phone number id)",
    ACCESS_TOKEN_PATTERN: "expected visible ASCII characters only (no spaces or line breaks)",
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


def _exclusive_bounds(info: msgspec.inspect.FloatType) -> str:
    """`greater than 0 and at most 1000000`, for bounds that may exclude their value."""

    def show(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    words = [("greater than", info.gt), ("at least", info.ge)]
    words += [("less than", info.lt), ("at most", info.le)]
    return " and ".join(f"{word} {show(x)}" for word, x in words if x is not None)


def _describe(info: msgspec.inspect.Type) -> str | None:
    """The rule a value of this type must follow, in words."""
    i = msgspec.inspect
    match info:
        case i.IntType():
            return "expected an integer" + _bounds(info.ge, info.le)
        case i.FloatType(gt=None, lt=None):
            return "expected a number" + _bounds(info.ge, info.le)
        case i.FloatType():
            return "expected a number " + _exclusive_bounds(info)
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
        case i.DictType(max_length=high):
            return "expected an object" + _dict_rules(info, high)
        case i.StructType():
            return "expected an object"
    return None


def _dict_rules(info: msgspec.inspect.DictType, high: int | None) -> str:
    """` of at most 100 entries with keys of 1 to 64 characters and values of ...`."""
    parts = []
    key = _strip_optional(info.key_type)
    if isinstance(key, msgspec.inspect.StrType) and key.max_length is not None:
        parts.append(f"keys of {key.min_length or 0} to {key.max_length} characters")
    value = _strip_optional(info.value_type)
    if isinstance(value, msgspec.inspect.StrType) and value.max_length is not None:
        parts.append(f"values of at most {value.max_length} characters")
    elif (each := _describe(value)) is not None:
        parts.append(f"values each {each.removeprefix('expected ')}")
    size = f" of at most {high} entries" if high is not None else ""
    return size + (" with " + " and ".join(parts) if parts else "")


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
