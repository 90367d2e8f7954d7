"""How long a status webhook takes to become visible in the API.

The simulator notes the wall-clock time at which it wrote every Nth status request of a
kind for a phone number id (`GET /simulator/timeline`): "the k-th `delivered` for number X
was posted at t". Meanwhile `StatsPoller` reads the campaign's counters over the API
(`GET /api/v1/campaigns/:id`) every `interval` seconds. The k-th status is visible once a
poll answers `stats.delivered >= k`; its lag is that answer's time minus t. A count, not
an identity, is matched, so a status applied out of order borrows its neighbour's lag;
the quantiles are what they measure. Resolution: the poll interval (the mean bias is
half of it), plus the GET's own time. Both processes read the same wall clock.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import Any

from benchmarks.client import Api, percentile


class StatsPoller:
    def __init__(self, api: Api, campaign_id: str, interval: float = 0.05) -> None:
        self.api = api
        self.campaign_id = campaign_id
        self.interval = interval
        self.samples: list[tuple[float, dict[str, Any]]] = []  # (answered at, stats)

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            campaign = await self.api.get(self.campaign_id)
            self.samples.append((time.time(), campaign["stats"]))
            await asyncio.sleep(self.interval)

    def lags(self, points: list[list[float]], counter: str) -> tuple[list[float], int]:
        """Lags in ms of timeline `points` ([count, posted_at], ...) against `counter`
        (e.g. "delivered"); and how many points never became visible while polling."""
        times = [at for at, _stats in self.samples]
        values = [stats[counter] for _at, stats in self.samples]
        # Counters only grow; a running maximum guards against a stale read.
        running = 0
        for i, value in enumerate(values):
            running = max(running, value)
            values[i] = running
        lags: list[float] = []
        unseen = 0
        for count, posted_at in points:
            index = bisect.bisect_left(values, count)
            if index == len(values):
                unseen += 1
                continue
            # The first poll at or after the post that shows it.
            first = max(index, bisect.bisect_left(times, posted_at))
            if first == len(times):
                unseen += 1
                continue
            lags.append((times[first] - posted_at) * 1000)
        return lags, unseen


def summary(lags: list[float], unseen: int, interval: float) -> dict[str, Any]:
    def rounded(q: float) -> float | None:
        value = percentile(lags, q)
        return None if value is None else round(value, 1)

    return {
        "samples": len(lags),
        "never_visible_while_polling": unseen,
        "p50_ms": rounded(0.50),
        "p99_ms": rounded(0.99),
        "max_ms": rounded(1.0),
        "poll_interval_ms": round(interval * 1000),
    }
