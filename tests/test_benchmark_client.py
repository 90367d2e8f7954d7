"""The benchmark driver reads counters from the daemon's `GET /metrics` text
(benchmarks/client.py), as prometheus-client renders them."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from benchmarks.client import counter


class _Fixed:
    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("campaign_engine_sends_released", "help", value=3)
        skipped = CounterMetricFamily("campaign_engine_facts_skipped", "help", labels=["reason"])
        skipped.add_metric(["invalid"], 2)
        skipped.add_metric(["unmatched"], 5)
        yield skipped


def test_a_counter_is_read_by_name_and_summed_over_its_labels() -> None:
    registry = CollectorRegistry()
    registry.register(_Fixed())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()

    assert counter(text, "campaign_engine_sends_released") == 3
    assert counter(text, "campaign_engine_facts_skipped") == 7
    # The `_created` sample and other metrics sharing the prefix are not the counter.
    assert counter(text, "campaign_engine_sends") == 0
