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


Event = (
    CampaignStarted
    | CampaignProgress
    | CampaignStatsChanged
    | CampaignPaused
    | CampaignResumed
    | CampaignCompleted
    | CampaignFailed
    | CampaignCancelled
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
)


def encode(event: Event) -> tuple[str, dict[str, Any]]:
    """The event's name and its JSON-ready payload, as a socket receives them."""
    payload: dict[str, Any] = msgspec.to_builtins(event)
    return event.NAME, payload
