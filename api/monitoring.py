"""Prometheus exposition for `/metrics`, built at scrape time.

Nothing is counted twice: the engine's actors already keep their statistics and
PostgreSQL already holds the campaign counters, so a scrape asks the engine for
one snapshot and renders it through a one-shot collector instead of threading
prometheus counters through the engine. The snapshot carries no tenant
identifiers, so neither does the exposition.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from engine.service import MonitoringSnapshot

PREFIX = "campaign_engine"

_STATUSES = ("draft", "scheduled", "running", "paused", "completed", "failed", "cancelled")


class _SnapshotCollector:
    def __init__(self, snapshot: MonitoringSnapshot, socketio_clients: int) -> None:
        self._snapshot = snapshot
        self._socketio_clients = socketio_clients

    def collect(self) -> Iterator[Metric]:
        yield from _sender_metrics(self._snapshot)
        yield from _campaign_metrics(self._snapshot)
        yield from _webhook_metrics(self._snapshot)
        yield from _stream_metrics(self._snapshot, self._socketio_clients)


def render(snapshot: MonitoringSnapshot, *, socketio_clients: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, socketio_clients))
    data: bytes = generate_latest(registry)
    return data


def _counter(name: str, help_text: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=float(value))


def _gauge(name: str, help_text: str, value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=float(value))


def _sender_metrics(s: MonitoringSnapshot) -> Iterator[Metric]:
    m = s.messages
    yield _counter("messages_sent", "Messages the Cloud API accepted.", m.sent)
    yield _counter("messages_failed", "Messages that failed for good.", m.failed)
    yield _counter("messages_retried", "Send attempts repeated after a transient error.", m.retried)
    yield _counter("messages_requeued", "Recipients requeued for later (131056).", m.requeued)
    yield _counter("messages_throttled", "Rate-limit answers from the Cloud API.", m.throttled)
    yield _gauge("sender_concurrency", "Configured concurrent sends.", s.sender_concurrency)
    yield _gauge("sender_slots_in_use", "Sends in flight now.", s.sender_slots_in_use)
    yield _counter(
        "sends_released",
        "Marked sends put back pending unwritten (a pause, a rate change, a turn missed).",
        s.sends_released,
    )
    latency = s.send_latency
    if len(latency.counts) == len(latency.bounds) + 1:
        cumulative, buckets = 0, []
        for bound, count in zip((*latency.bounds, float("inf")), latency.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        yield HistogramMetricFamily(
            f"{PREFIX}_send_latency_seconds",
            "Cloud API request latency.",
            buckets=buckets,
            sum_value=latency.sum_seconds,
        )


def _campaign_metrics(s: MonitoringSnapshot) -> Iterator[Metric]:
    by_status = GaugeMetricFamily(
        f"{PREFIX}_campaigns", "Campaigns by status (all daemons).", labels=["status"]
    )
    for status in _STATUSES:
        by_status.add_metric([status], float(s.campaigns_by_status.get(status, 0)))
    yield by_status
    yield _gauge("running_campaigns", "Campaigns running (all daemons).", s.running_campaigns)
    yield _gauge(
        "local_campaign_actors", "Campaigns this daemon is running.", s.local_campaign_actors
    )
    yield _gauge(
        "pending_recipients",
        "Recipients still to send in running campaigns (all daemons).",
        s.pending_recipients,
    )
    yield _gauge(
        "accounts_sending",
        "WhatsApp accounts with a running campaign (all daemons).",
        s.accounts_sending,
    )


def _webhook_metrics(s: MonitoringSnapshot) -> Iterator[Metric]:
    yield _counter(
        "webhook_facts_received", "Status facts received from webhooks.", s.webhook_facts_received
    )
    yield _counter(
        "webhook_facts_applied", "Status facts applied to recipients.", s.webhook_facts_applied
    )
    yield _counter(
        "webhook_batches_applied", "Batches of status facts applied.", s.webhook_batches_applied
    )
    yield _gauge(
        "webhook_facts_queued", "Status facts waiting to be applied.", s.webhook_facts_queued
    )
    skipped = CounterMetricFamily(
        f"{PREFIX}_webhook_facts_skipped",
        "Status facts skipped: malformed or not storable (invalid), or matching no "
        "recipient they may apply to (unmatched).",
        labels=["reason"],
    )
    skipped.add_metric(["invalid"], float(s.webhook_facts_refused))
    skipped.add_metric(["unmatched"], float(s.webhook_facts_unmatched))
    yield skipped
    yield _counter(
        "webhook_apply_errors",
        "Batches of status facts the database failed; their facts are kept and retried.",
        s.webhook_apply_errors,
    )


def _stream_metrics(s: MonitoringSnapshot, socketio_clients: int) -> Iterator[Metric]:
    yield _gauge(
        "socketio_clients", "Socket.IO clients connected to this daemon.", socketio_clients
    )
    yield _counter("events_published", "Campaign events published.", s.events_published)
    yield _counter(
        "events_dropped",
        "Campaign events dropped because a subscriber was too slow.",
        s.events_dropped,
    )
