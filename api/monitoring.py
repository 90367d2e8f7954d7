"""Prometheus exposition for `/metrics`, built at scrape time.

Nothing is counted twice: the engine's actors already keep their statistics and
PostgreSQL already holds the campaign counters, so a scrape reads both and
renders them through a one-shot collector instead of threading prometheus
counters through the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

PREFIX = "campaign_engine"


class Snapshot(msgspec.Struct, frozen=True):
    statistics: dict[str, Any]  # msgspec.to_builtins(engine.statistics())
    store: dict[str, Any]  # queue.monitoring_snapshot()
    socketio_clients: int
    latency_buckets: tuple[float, ...]


class _SnapshotCollector:
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from _sender_metrics(self._snapshot)
        yield from _campaign_metrics(self._snapshot.store, self._snapshot.statistics)
        yield from _webhook_metrics(self._snapshot.statistics.get("webhooks", {}))
        yield from _stream_metrics(self._snapshot)


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    data: bytes = generate_latest(registry)
    return data


def _sender_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    pool: Mapping[str, Any] = snapshot.statistics.get("sender_pool", {})
    accounts: Mapping[str, Mapping[str, int]] = pool.get("accounts", {})
    for counter, help_text in (
        ("sent", "Messages the Cloud API accepted"),
        ("failed", "Messages that failed for good"),
        ("retried", "Send attempts repeated after a transient error"),
        ("requeued", "Recipients requeued for later (131056)"),
        ("throttled", "Rate-limit answers from the Cloud API (130429)"),
    ):
        family = CounterMetricFamily(
            f"{PREFIX}_messages_{counter}", f"{help_text}, by account.", labels=["account"]
        )
        for account, values in sorted(accounts.items()):
            family.add_metric([account], float(values.get(counter, 0)))
        yield family
    gauges = (
        ("sender_concurrency", "concurrency", "Configured concurrent sends."),
        ("sender_slots_in_use", "slots_in_use", "Sends in flight now."),
    )
    for name, key, help_text in gauges:
        yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=float(pool.get(key, 0)))
    counts = pool.get("latency_bucket_counts")
    if counts and len(counts) == len(snapshot.latency_buckets) + 1:
        cumulative, buckets = 0, []
        for bound, count in zip((*snapshot.latency_buckets, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        yield HistogramMetricFamily(
            f"{PREFIX}_send_latency_seconds",
            "Cloud API request latency.",
            buckets=buckets,
            sum_value=float(pool.get("latency_sum_seconds", 0.0)),
        )


def _campaign_metrics(store: Mapping[str, Any], statistics: Mapping[str, Any]) -> Iterator[Metric]:
    by_status = GaugeMetricFamily(
        f"{PREFIX}_campaigns", "Campaigns by status (all daemons).", labels=["status"]
    )
    statuses: Mapping[str, int] = store.get("campaigns", {})
    for status in ("draft", "scheduled", "running", "paused", "completed", "failed", "cancelled"):
        by_status.add_metric([status], float(statuses.get(status, 0)))
    yield by_status
    yield GaugeMetricFamily(
        f"{PREFIX}_running_campaigns",
        "Campaigns running (all daemons).",
        value=float(statuses.get("running", 0)),
    )
    running = statistics.get("supervisor", {}).get("running", ())
    yield GaugeMetricFamily(
        f"{PREFIX}_local_campaign_actors",
        "Campaigns this daemon is running.",
        value=float(len(running)),
    )
    accounts: list[Mapping[str, Any]] = store.get("running_by_account", [])
    yield GaugeMetricFamily(
        f"{PREFIX}_pending_recipients",
        "Recipients still to send in running campaigns.",
        value=float(sum(int(a.get("pending", 0)) for a in accounts)),
    )
    pending = GaugeMetricFamily(
        f"{PREFIX}_pending_recipients_by_account",
        "Recipients still to send in running campaigns, by account.",
        labels=["account"],
    )
    for account in accounts:
        pending.add_metric([str(account["account"])], float(account.get("pending", 0)))
    yield pending


def _webhook_metrics(webhooks: Mapping[str, Any]) -> Iterator[Metric]:
    yield CounterMetricFamily(
        f"{PREFIX}_webhook_facts_received",
        "Status facts received from webhooks.",
        value=float(webhooks.get("received", 0)),
    )
    yield CounterMetricFamily(
        f"{PREFIX}_webhook_facts_applied",
        "Status facts applied to recipients.",
        value=float(webhooks.get("applied_facts", 0)),
    )
    yield CounterMetricFamily(
        f"{PREFIX}_webhook_batches_applied",
        "Batches of status facts applied.",
        value=float(webhooks.get("applied_batches", 0)),
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_webhook_facts_queued",
        "Status facts waiting to be applied.",
        value=float(webhooks.get("queued", 0)),
    )


def _stream_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    broadcaster: Mapping[str, Any] = snapshot.statistics.get("broadcaster", {})
    yield GaugeMetricFamily(
        f"{PREFIX}_socketio_clients",
        "Socket.IO clients connected to this daemon.",
        value=float(snapshot.socketio_clients),
    )
    yield CounterMetricFamily(
        f"{PREFIX}_events_published",
        "Campaign events published.",
        value=float(broadcaster.get("published", 0)),
    )
    yield CounterMetricFamily(
        f"{PREFIX}_events_dropped",
        "Campaign events dropped because a subscriber was too slow.",
        value=float(
            broadcaster.get("dropped_at_inbox", 0) + broadcaster.get("dropped_for_subscribers", 0)
        ),
    )
