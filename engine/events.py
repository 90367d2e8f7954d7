"""The Socket.IO events (docs/socketio-events.md): one frozen struct per event.

Fields are snake_case here and camelCase on the wire (`rename="camel"`); `encode`
is the one place an event becomes the name and payload a socket receives, so
the stream, `watch` and tests all see the same thing.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class _Event(msgspec.Struct, frozen=True, rename="camel"):
    NAME: ClassVar[str]
    campaign_id: str


class CampaignStarted(_Event, frozen=True):
    NAME = "campaign:started"
    name: str
    total_recipients: int
    started_at: str | None


class CampaignProgress(_Event, frozen=True):
    NAME = "campaign:progress"
    progress: float
    processed_count: int
    total_recipients: int
    sent_count: int
    failed_count: int


class CampaignStatsChanged(_Event, frozen=True):
    NAME = "campaign:stats"
    # As in the campaign object: snake_case keys.
    stats: dict[str, int]
    metrics: dict[str, float]


class CampaignPaused(_Event, frozen=True):
    NAME = "campaign:paused"
    processed_count: int
    total_recipients: int
    paused_at: str | None
    reason: str | None


class CampaignResumed(_Event, frozen=True):
    NAME = "campaign:resumed"


class CampaignCompleted(_Event, frozen=True):
    NAME = "campaign:completed"
    campaign: dict[str, Any]  # the campaign object
    completed_at: str | None


class CampaignFailed(_Event, frozen=True):
    NAME = "campaign:failed"
    error: str
    failed_at: str | None


class CampaignCancelled(_Event, frozen=True):
    NAME = "campaign:cancelled"
    cancelled_at: str | None


class CampaignDeferred(_Event, frozen=True):
    """Recipients wait `pending` for a reason: `messaging_limit` (the portfolio's
    unique users per 24 h) or `send_window` (outside their local hours)."""

    NAME = "campaign:deferred"
    reason: str
    deferred_until: str | None  # the earliest of them goes then
    count: int  # recipients deferred since the last announcement


class CampaignSampleSent(_Event, frozen=True):
    """An A/B test's sample is sent; its winner is chosen at `decide_at`."""

    NAME = "campaign:sample_sent"
    sample_size: int
    decide_at: str | None


class CampaignVariantChosen(_Event, frozen=True):
    """An A/B test's winner, chosen by `metric` over its sample; the rest of the
    recipients get it."""

    NAME = "campaign:variant_chosen"
    variant: str  # the winner's name
    variant_index: int
    metric: str  # read_rate, reply_rate or click_rate
    values: dict[str, float]  # each variant's metric over its sample, by name
    decided_at: str | None


Event = (
    CampaignStarted
    | CampaignProgress
    | CampaignStatsChanged
    | CampaignPaused
    | CampaignResumed
    | CampaignCompleted
    | CampaignFailed
    | CampaignCancelled
    | CampaignDeferred
    | CampaignSampleSent
    | CampaignVariantChosen
)

EVENT_NAMES: tuple[str, ...] = (
    CampaignStarted.NAME,
    CampaignProgress.NAME,
    CampaignStatsChanged.NAME,
    CampaignPaused.NAME,
    CampaignResumed.NAME,
    CampaignCompleted.NAME,
    CampaignFailed.NAME,
    CampaignCancelled.NAME,
    CampaignDeferred.NAME,
    CampaignSampleSent.NAME,
    CampaignVariantChosen.NAME,
)


def encode(event: Event) -> tuple[str, dict[str, Any]]:
    """The event's name and its JSON-ready payload, as a socket receives them."""
    payload: dict[str, Any] = msgspec.to_builtins(event)
    return event.NAME, payload
