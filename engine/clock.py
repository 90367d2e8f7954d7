"""Wall-clock time derived from trio's clock.

Timestamps the engine records about its own work (sent_at, scheduled times,
in-doubt deadlines) come from here rather than from SQL `now()`, so tests on
`trio.testing.MockClock` move the database's notion of time together with the
engine's.

What several daemons must agree on never does: lease expiry is PostgreSQL's
`now()` (engine/store/leases.py) and the shared sending budget is Redis's `TIME`
(engine/transport/redis_link.py), so daemons whose clocks disagree still agree
on who owns a campaign and on whose turn it is.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import trio


class WallClock:
    def __init__(self) -> None:
        self._wall_at_start = time.time()
        self._trio_at_start = trio.current_time()

    def now(self) -> datetime:
        elapsed = trio.current_time() - self._trio_at_start
        return datetime.fromtimestamp(self._wall_at_start, UTC) + timedelta(seconds=elapsed)

    def trio_time_at(self, moment: datetime) -> float:
        """The trio deadline at which `moment` (wall clock) is reached."""
        return trio.current_time() + (moment - self.now()).total_seconds()
