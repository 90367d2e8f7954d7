"""Facts that cross layers, and messages between actors: small frozen structs,
one union per inbox."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

import msgspec
import trio

from engine.core.metrics import CampaignStats
from engine.events import Event, encode
from engine.gateway import AccountEndpoint, OutgoingMessage

# --- facts: what a send and a webhook tell ------------------------------------------


class Outcome(msgspec.Struct, frozen=True):
    """The result of one dispatch of a recipient, as the sender pool reports it.

    `pending`: back to the queue (a retry after backoff, a requeue, an account
    pause, or a send that never started); `in_doubt`: the request may have
    reached WhatsApp and no answer came back.
    """

    recipient_id: int
    status: Literal["sent", "failed", "pending", "in_doubt"]
    attempts: int  # requests made for this recipient in this dispatch (0 or 1)
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    not_before: datetime | None = None
    requeued: bool = False  # a 131056 requeue: counted against sender.max_requeues
    deferred: bool = False  # a 131049 deferral: counted against delivery.max_deferrals
    # Set when the account, not the recipient, is at fault: the campaign pauses.
    # Not stored on the recipient.
    pause_reason: str | None = None
    pause_number: bool = False  # the phone number is restricted: all its campaigns pause


class StatusUpdate(msgspec.Struct, frozen=True):
    """One fact from a webhook. `recipient_id` is the recipient a verified
    biz_opaque_callback_data reference names (engine/core/callback_reference.py);
    without one the message is found by its wamid. `phone_number_id` is the
    webhook's `metadata.phone_number_id`, which must be the recipient's account's
    number, and `provider_message_id` must be the recipient's stored wamid if it has
    one. The parser always sets both; None means "not checked", for facts built
    in-process (tests, tools)."""

    recipient_id: int | None
    provider_message_id: str | None
    kind: Literal["sent", "delivered", "read", "failed", "replied"]
    at: datetime
    error_code: str | None = None
    error_message: str | None = None
    phone_number_id: str | None = None
    # The status's `pricing` object (what WhatsApp bills for the message), if any.
    pricing: Pricing | None = None


class Pricing(msgspec.Struct, frozen=True):
    """A status webhook's `pricing`: e.g. category "marketing", model "PMP"."""

    category: str | None = None
    billable: bool | None = None
    pricing_model: str | None = None
    type: str | None = None


# --- signals: template, quality and account webhooks (docs/webhooks.md) ------------------


class TemplateStatusSignal(msgspec.Struct, frozen=True):
    """`message_template_status_update`: a template was approved, paused, disabled..."""

    business_account_id: str | None  # the WABA (`entry[].id`) the template belongs to
    event: str  # APPROVED, PAUSED, DISABLED, REJECTED, FLAGGED, ...
    template_name: str
    template_language: str | None
    template_id: str | None
    reason: str | None
    content: bytes  # the change's `value`, as WhatsApp sent it (JSON)
    phone_number_id: str | None = None  # `metadata.phone_number_id`, if sent


class QualitySignal(msgspec.Struct, frozen=True):
    """`phone_number_quality_update`: a number's quality or messaging limit changed."""

    business_account_id: str | None
    event: str  # FLAGGED, UNFLAGGED, DOWNGRADE, UPGRADE, ONBOARDING, ...
    display_phone_number: str | None
    current_limit: str | None  # e.g. TIER_1K
    old_limit: str | None
    content: bytes
    phone_number_id: str | None = None
    # The portfolio's limit, which Meta sends in place of current_limit from 2026.
    max_daily_limit: str | None = None


class AccountSignal(msgspec.Struct, frozen=True):
    """`account_update`: the WhatsApp Business Account was restricted, banned, ..."""

    business_account_id: str | None
    event: str  # ACCOUNT_RESTRICTION, DISABLED_UPDATE, ACCOUNT_VIOLATION, ...
    phone_number: str | None
    restriction_types: tuple[str, ...]  # restriction_info[].restriction_type
    ban_state: str | None  # ban_info.waba_ban_state: DISABLE, REINSTATE, ...
    violation_type: str | None
    content: bytes
    phone_number_id: str | None = None


Signal = TemplateStatusSignal | QualitySignal | AccountSignal
WebhookFact = StatusUpdate | Signal


# --- campaign actor inbox -------------------------------------------------------------


class StopRequested(msgspec.Struct, frozen=True):
    """A pause or cancel was committed; the actor re-reads the status to know which."""


class ThrottleChanged(msgspec.Struct, frozen=True):
    """The campaign's throttleConfig was edited; the actor re-reads it."""


class Recheck(msgspec.Struct, frozen=True):
    """Recipients changed under the actor (a webhook resolved in-doubt sends)."""


class Shutdown(msgspec.Struct, frozen=True):
    """The daemon is stopping (or lost the lease): stop without changing the status."""


CampaignCommand = StopRequested | ThrottleChanged | Recheck | Shutdown


class Recorded(msgspec.Struct, frozen=True):
    """The recorder stored these outcomes of the actor's sends (on its own channel,
    apart from commands: the recorder must never wait for a campaign)."""

    outcomes: list[Outcome]
    # The campaign's counts just after these were stored (engine.store.recipients).
    stats: CampaignStats


# --- supervisor inbox -----------------------------------------------------------------


class CommandKind(enum.StrEnum):
    """What a NOTIFY on the command channel announces about one campaign."""

    START = "start"  # it may be claimable now
    RESUME = "resume"
    PAUSE = "pause"  # its owner stops dispatching
    CANCEL = "cancel"
    THROTTLE = "throttle"  # its owner re-reads throttleConfig
    RECHECK = "recheck"  # recipients changed under its owner (in-doubt resolved)


class Notice(msgspec.Struct, frozen=True):
    """A command committed by some daemon (PostgreSQL NOTIFY) for one campaign."""

    kind: CommandKind
    campaign_id: str


class ActorEnded(msgspec.Struct, frozen=True):
    campaign_id: str


SupervisorMessage = Notice | ActorEnded


# --- sender pool inbox ----------------------------------------------------------------


class DispatchGate:
    """Whether a campaign run's marked sends may still be written.

    The one piece of state a sender reads from a campaign actor: it must be
    checked at the instant of writing, and a message would arrive too late. A
    pause closes it (marked sends not yet written go back to `pending`); a rate
    change moves the epoch (sends timed at the old rate go back and are timed
    again).
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.closed = False

    def allows(self, epoch: int) -> bool:
        return not self.closed and epoch == self.epoch


class SendJob(msgspec.Struct, frozen=True):
    campaign_id: str
    endpoint: AccountEndpoint
    message: OutgoingMessage
    attempts: int  # requests made for this recipient before this one
    requeues: int
    deferrals: int
    write_at: float  # trio time of its turn in the campaign's and the account's pace
    account_rate: float  # the budget's fallback rate for the number
    gate: DispatchGate
    epoch: int
    # The campaign actor's inbox: the recorder tells it what was stored.
    reply_to: trio.MemorySendChannel[Recorded]


# --- broadcaster ----------------------------------------------------------------------


class CampaignEvent(msgspec.Struct, frozen=True):
    """One Socket.IO event (engine/events.py), for the sockets of one user."""

    owner_id: str
    event: Event

    @property
    def name(self) -> str:
        return self.event.NAME

    @property
    def payload(self) -> dict[str, Any]:
        return encode(self.event)[1]


class Lagged(msgspec.Struct, frozen=True):
    """Delivered to a subscriber in place of the events it was too slow to take."""

    dropped: int
