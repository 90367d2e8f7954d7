"""WhatsApp's two volume limits, as plain values: `now` is passed in, nothing sleeps.

- Throughput: at most `mps` accepted sends per phone number in any rolling second
  (beyond: 130429).
- Messaging limit: at most N unique users reached per moving 24 hours, counted per
  business portfolio and shared by its numbers (beyond: the send is refused).
"""

from __future__ import annotations

from collections import OrderedDict, deque

DAY_SECONDS = 24 * 3600.0


class ThroughputWindow:
    """Accepted sends of one phone number in the last second."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def admit(self, now: float, mps: int) -> bool:
        """Count a send at `now` unless `mps` (> 0) were already counted in (now - 1, now]."""
        times = self._times
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) >= mps:
            return False
        times.append(now)
        return True


class UniqueUsersWindow:
    """The users a portfolio reached in the moving `period`: each with its latest send,
    oldest first, so expiry pops from the front."""

    def __init__(self, period: float = DAY_SECONDS) -> None:
        self.period = period
        self._latest: OrderedDict[str, float] = OrderedDict()

    def admit(self, to: str, now: float, limit: int) -> bool:
        """Count a send to `to` at `now`. A user already reached within the period costs
        nothing more; a new one is refused once `limit` users were reached."""
        self._expire(now)
        latest = self._latest
        if to in latest:
            latest[to] = now
            latest.move_to_end(to)
            return True
        if len(latest) >= limit:
            return False
        latest[to] = now
        return True

    def used(self, now: float) -> int:
        """Unique users reached in (now - period, now]."""
        self._expire(now)
        return len(self._latest)

    def next_opening(self, now: float) -> float | None:
        """When the oldest user leaves the window (None: nobody in it)."""
        self._expire(now)
        for at in self._latest.values():
            return at + self.period
        return None

    def _expire(self, now: float) -> None:
        latest = self._latest
        horizon = now - self.period
        while latest:
            to, at = next(iter(latest.items()))
            if at > horizon:
                break
            del latest[to]
