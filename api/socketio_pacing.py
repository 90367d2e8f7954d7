"""`campaign:stats` paced per campaign (docs/socketio-events.md allows coalescing them).

A campaign at 1,000 messages a second announces its stats twenty times a second
(`engine.stats_every`); each announcement goes to every socket of its owner, and a
thousand dashboards of one user then spend more on decoding stats than anything else.
Stats are a view of counts, the last one best: the stream sends at most one per campaign
every `interval` seconds, the first at once and the last always (held until its turn).
A held stats goes out before any later lifecycle event of its campaign (paused, completed,
...), so that nothing older follows them. Progress and lifecycle events are never held.

Pure: the caller gives the time (`now`, trio's clock in api/socketio_server.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.events import CampaignProgress, CampaignStatsChanged
from engine.messages import CampaignEvent

STATS_INTERVAL = 0.5  # seconds: twice a second is live enough for a dashboard


def coalesce_stats(events: Sequence[CampaignEvent]) -> list[CampaignEvent]:
    """`events` without the `campaign:stats` a later one of the same campaign supersedes."""
    last: dict[str, int] = {}
    for index, item in enumerate(events):
        if isinstance(item.event, CampaignStatsChanged):
            last[item.event.campaign_id] = index
    return [
        item
        for index, item in enumerate(events)
        if not isinstance(item.event, CampaignStatsChanged) or last[item.event.campaign_id] == index
    ]


class StatsPacer:
    """Which events to send now; `due` says when held stats must go."""

    def __init__(self, interval: float = STATS_INTERVAL) -> None:
        self._interval = interval
        self._next: dict[str, float] = {}  # campaign id: when its next stats may go
        self._held: dict[str, CampaignEvent] = {}

    @property
    def due(self) -> float | None:
        """When the earliest held stats must go (None: none is held)."""
        return min((self._next[c] for c in self._held), default=None)

    def admit(self, events: Sequence[CampaignEvent], now: float) -> list[CampaignEvent]:
        """`events` (in order) as they may go now; the rest is held."""
        out = self.release(now)
        for item in events:
            event = item.event
            campaign = event.campaign_id
            if isinstance(event, CampaignStatsChanged):
                if self._next.get(campaign, now) <= now and campaign not in self._held:
                    out.append(item)
                    self._next[campaign] = now + self._interval
                else:
                    self._held[campaign] = item  # the last one replaces the one held
                continue
            if not isinstance(event, CampaignProgress):
                held = self._held.pop(campaign, None)
                if held is not None:
                    out.append(held)
                self._next.pop(campaign, None)  # a new phase: its next stats goes at once
            out.append(item)
        self._forget(now)
        return out

    def release(self, now: float) -> list[CampaignEvent]:
        """The held stats whose turn has come."""
        out: list[CampaignEvent] = []
        for campaign in [c for c in self._held if self._next[c] <= now]:
            out.append(self._held.pop(campaign))
            self._next[campaign] = now + self._interval
        return out

    def _forget(self, now: float) -> None:
        # Campaigns quiet for a while: nothing to pace any more.
        if len(self._next) > 1000:
            for campaign in [c for c, t in self._next.items() if t <= now]:
                if campaign not in self._held:
                    del self._next[campaign]
