"""Messages between actors: small frozen structs, one union per inbox."""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.store.recipients import Outcome

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


# --- supervisor inbox -----------------------------------------------------------------


class Notice(msgspec.Struct, frozen=True):
    """A command committed by some daemon (PostgreSQL NOTIFY) for one campaign."""

    action: str  # start | resume | pause | cancel | throttle | recheck
    campaign_id: str


class ActorEnded(msgspec.Struct, frozen=True):
    campaign_id: str


SupervisorMessage = Notice | ActorEnded


# --- sender pool inbox ----------------------------------------------------------------


class SendJob(msgspec.Struct, frozen=True):
    campaign_id: str
    endpoint: AccountEndpoint
    account_messages_per_second: float
    message: OutgoingMessage
    # Each campaign actor hands out a clone of its own outcome channel.
    reply_to: trio.MemorySendChannel[Outcome]


# --- broadcaster ----------------------------------------------------------------------


class CampaignEvent(msgspec.Struct, frozen=True):
    """One event of CONTRACT section 6, for the sockets of one user."""

    owner_id: str
    name: str  # campaign:started, campaign:progress, ...
    payload: dict[str, Any]


class Lagged(msgspec.Struct, frozen=True):
    """Delivered to a subscriber in place of the events it was too slow to take."""

    dropped: int
