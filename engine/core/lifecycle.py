"""Which control actions a campaign's status allows, and what they lead to.

Covers the actions a user asks for through the API. The moves the engine makes
by itself (scheduled -> running -> completed / failed) are not actions here.
"""

from __future__ import annotations

from typing import Literal, get_args

CampaignStatus = Literal[
    "draft", "scheduled", "running", "paused", "completed", "failed", "cancelled"
]
CampaignAction = Literal["start", "pause", "resume", "cancel", "edit", "delete"]

ALL_STATUSES: tuple[CampaignStatus, ...] = get_args(CampaignStatus)
ALL_ACTIONS: tuple[CampaignAction, ...] = get_args(CampaignAction)
FINAL_STATUSES: tuple[CampaignStatus, ...] = ("completed", "failed", "cancelled")

# Fields of a PATCH that a running campaign accepts; the sender applies them live.
LIVE_EDITABLE_FIELDS: frozenset[str] = frozenset({"throttleConfig"})


class TransitionRefused(Exception):
    """An action the campaign's status does not allow (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # snake_case, for `error.code`
        self.message = message  # a sentence a person can act on


def is_final(status: CampaignStatus) -> bool:
    return status in FINAL_STATUSES


_NON_FINAL: frozenset[CampaignStatus] = frozenset(
    status for status in ALL_STATUSES if status not in FINAL_STATUSES
)
_ALLOWED_FROM: dict[CampaignAction, frozenset[CampaignStatus]] = {
    # Starting a scheduled campaign means "start now".
    "start": frozenset({"draft", "scheduled"}),
    "pause": frozenset({"scheduled", "running"}),
    "resume": frozenset({"paused"}),
    "cancel": _NON_FINAL,
    # On a running campaign only LIVE_EDITABLE_FIELDS; see editable_fields().
    "edit": _NON_FINAL,
    "delete": frozenset(status for status in ALL_STATUSES if status != "running"),
}
_RESULT: dict[CampaignAction, CampaignStatus | None] = {
    "start": "scheduled",
    "pause": "paused",
    "resume": "scheduled",  # the scheduler picks it up again, as after start
    "cancel": "cancelled",
    "edit": None,  # unchanged
    "delete": None,  # unchanged: the campaign is removed, its status does not move
}


def allowed_from(action: CampaignAction) -> frozenset[CampaignStatus]:
    """The statuses `action` may be applied to."""
    return _ALLOWED_FROM[action]


def editable_fields(status: CampaignStatus) -> frozenset[str] | None:
    """The PATCH fields `status` accepts: None means all of them."""
    if status == "running":
        return LIVE_EDITABLE_FIELDS
    if is_final(status):
        return frozenset()
    return None


def check(action: CampaignAction, status: CampaignStatus) -> CampaignStatus:
    """The status `action` leads to from `status`, or TransitionRefused."""
    if action not in _ALLOWED_FROM:
        raise ValueError(f"unknown campaign action {action!r}")
    if status not in ALL_STATUSES:
        raise ValueError(f"unknown campaign status {status!r}")
    if status in _ALLOWED_FROM[action]:
        return _RESULT[action] or status
    raise _refusal(action, status)


def _refusal(action: CampaignAction, status: CampaignStatus) -> TransitionRefused:
    match action:
        case "start" | "cancel" | "edit" if is_final(status):
            return TransitionRefused("campaign_finished", f"Campaign is already {status}")
        case "start" if status == "running":
            return TransitionRefused("campaign_already_running", "Campaign is already running")
        case "start" if status == "paused":
            return TransitionRefused(
                "campaign_paused", "Campaign is paused; resume it to continue sending"
            )
        case "pause" if status == "paused":
            return TransitionRefused("campaign_already_paused", "Campaign is already paused")
        case "pause":
            return TransitionRefused(
                "campaign_not_running",
                f"Campaign is not running (it is {status}); only a scheduled or running"
                " campaign can be paused",
            )
        case "resume":
            return TransitionRefused("campaign_not_paused", "Campaign is not paused")
        case "delete":
            return TransitionRefused(
                "campaign_running", "Campaign is running; pause or cancel it before deleting it"
            )
    # Unreachable while _ALLOWED_FROM and the cases above agree; fail loudly if not.
    raise AssertionError(f"no refusal for {action} on a {status} campaign")
