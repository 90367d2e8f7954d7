"""The scale benchmark reports, beside each tenth's start latency, the CPU shares it
was measured under (benchmarks/scale.py `LoadMeter`)."""

from __future__ import annotations

from typing import Any, cast

from benchmarks.scale import LoadMeter


class _Counter:
    """CPU seconds that advance only when the test says so."""

    def __init__(self) -> None:
        self.total = 0.0
        self.started_at = 0.0

    def cpu_seconds(self) -> float:
        return self.total

    def start(self) -> None:
        self.started_at = self.total

    def seconds(self) -> float:
        return self.total - self.started_at


def test_each_lap_gives_the_shares_of_its_own_interval() -> None:
    now = [100.0]
    daemon, postgres = _Counter(), _Counter()
    meter = LoadMeter(cast(Any, daemon), cast(Any, postgres), clock=lambda: now[0])

    now[0] += 2.0
    daemon.total, postgres.total = 1.0, 0.5
    first = meter.lap()
    now[0] += 4.0
    daemon.total, postgres.total = 4.0, 0.5
    second = meter.lap()

    assert first["daemon_cpu_percent_of_one_core"] == 50.0
    assert first["all_postgres_cpu_percent_of_one_core"] == 25.0
    assert second["daemon_cpu_percent_of_one_core"] == 75.0
    assert second["all_postgres_cpu_percent_of_one_core"] == 0.0
    assert 0.0 <= second["machine_cpu_percent_of_all_cores"] <= 100.0
