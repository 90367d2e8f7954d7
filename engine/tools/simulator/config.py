"""What the simulator is told: the process-wide `SimulatorConfig`, and per phone number id
a `NumberBehaviour` (messaging limit, throughput, forced errors), set by `--number` or by
`POST /simulator/numbers/{phone_number_id}` with the same JSON."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# Answers a number can be told to give (`force.code`). 131049, 131048, 131047, 368 and
# 131056 are WhatsApp's limits and signals; the others are the usual transient,
# permanent and account-level answers, so a test can force any class of error.
FORCEABLE_CODES = frozenset(
    {131049, 131048, 131047, 368, 131056, 130429, 131026, 131000, 131031, 131042, 131051,
     190, 1, 2, 132000, 132001}
)  # fmt: skip

Share = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
PhoneText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ForcedError(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Answer `code` to a `share` of the number's sends, `times` times (unset: until
    cleared). `via: "webhook"` accepts the send (200 and a wamid) and posts a `failed`
    status carrying the code instead, as Meta does for 131049 and 131026. 131047 applies
    to free-form messages only: templates may be sent outside the 24-hour window."""

    code: int
    share: Share = 1.0
    times: Positive | None = None
    via: Literal["answer", "webhook"] = "answer"


class NumberBehaviour(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """How one phone number id behaves beyond the process-wide defaults."""

    # Unique users per moving 24 h, shared by every number of the same portfolio
    # (Meta sets it per business portfolio). Unset: unlimited.
    messaging_limit: Positive | None = None
    portfolio: PhoneText | None = None  # unset: the number is a portfolio of its own
    mps: NonNegative | None = None  # unset: SimulatorConfig.mps; 0: unlimited
    force: ForcedError | None = None
    display_phone_number: PhoneText | None = None  # unset: SimulatorConfig's

    def portfolio_of(self, phone_number_id: str) -> str:
        return self.portfolio if self.portfolio is not None else f"number:{phone_number_id}"


class NumberUpdate(msgspec.Struct, frozen=True, kw_only=True, rename="camel",
                   forbid_unknown_fields=True):  # fmt: skip
    """The body of `POST /simulator/numbers/{id}`: a field left out keeps its value,
    `null` clears it."""

    messaging_limit: Positive | msgspec.UnsetType | None = msgspec.UNSET
    portfolio: PhoneText | msgspec.UnsetType | None = msgspec.UNSET
    mps: NonNegative | msgspec.UnsetType | None = msgspec.UNSET
    force: ForcedError | msgspec.UnsetType | None = msgspec.UNSET
    display_phone_number: PhoneText | msgspec.UnsetType | None = msgspec.UNSET

    def applied_to(self, behaviour: NumberBehaviour) -> NumberBehaviour:
        changes = {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not msgspec.UNSET
        }
        return msgspec.structs.replace(behaviour, **changes)


class InvalidBehaviour(ValueError):
    """A number's behaviour does not validate; `field` is its JSON path."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


_decode_update = msgspec.json.Decoder(NumberUpdate).decode


def validation_field(message: str) -> str | None:
    """The JSON path a msgspec validation message names: `... - at `$.a.b``, or the field
    an object misses or should not have."""
    text, found, at = message.rpartition(" - at `")
    path = at.rstrip("`") if found else "$"
    text = text if found else message
    for marker in ("missing required field `", "unknown field `"):
        if marker in text:
            name = text.split(marker, 1)[1].split("`", 1)[0]
            return f"{path}.{name}"
    return path if found else None


def parse_number_update(body: bytes) -> NumberUpdate:
    """The JSON of `--number ID=JSON` and of the control endpoint, validated."""
    try:
        update = _decode_update(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise InvalidBehaviour(message, validation_field(message)) from None
    except msgspec.DecodeError as exc:
        raise InvalidBehaviour(f"not JSON: {exc}", None) from None
    if isinstance(update.force, ForcedError) and update.force.code not in FORCEABLE_CODES:
        codes = ", ".join(str(c) for c in sorted(FORCEABLE_CODES))
        raise InvalidBehaviour(f"force.code must be one of {codes}", "$.force.code")
    return update


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    latency_ms: float = 0.0  # added to every answer of the send endpoint
    failure_rate: float = 0.0  # share of sends answered 131000
    mps: int = 80  # per phone number id, sliding one-second window; 0: unlimited
    seed: int | None = None
    numbers: dict[str, NumberBehaviour] = {}  # initial behaviour per phone number id
    # Webhooks (none without webhook_url): each status in its own request unless
    # webhook_batch > 1 groups the statuses due together for one number.
    webhook_url: str | None = None
    app_secret: str = ""
    webhook_batch: int = 1
    # Keep-alive connections, each one request at a time; each message sticks to one. 32
    # carry 3,500 requests/s to a receiver answering within 9 ms.
    webhook_posters: int = 32
    max_pending_webhooks: int = 1_000_000  # beyond: dropped and counted
    # When each status follows the send, as Meta's do: sent, then delivered, then read
    # (a share), and an inbound reply (a share). jitter_ms spreads each delay uniformly;
    # a message's statuses keep their order whatever the jitter.
    sent_ms: float = 0.0
    delivered_ms: float = 50.0
    read_ms: float = 100.0
    read_share: float = 0.5
    reply_ms: float = 150.0
    reply_share: float = 0.1
    jitter_ms: float = 0.0
    display_phone_number: str = "15550000000"
    waba_id: str = "WABA"
    keep_requests: int = 100_000  # newest requests kept in SimulatorState.requests
    keep_accepted: int = 10_000  # newest accepted sends kept in full (`GET /simulator/accepted`)
    timeline_every: int = 10  # the time of every Nth send and status per number is kept
