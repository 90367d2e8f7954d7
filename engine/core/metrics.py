"""Campaign counters and the rates derived from them (docs/http-api.md, the campaign object).

Rates are percentages rounded to 2 decimals, 0 when the denominator is 0.
"""

from __future__ import annotations

import msgspec


class CampaignStats(msgspec.Struct, frozen=True):
    """Cumulative recipient counts: `read` implies delivered, `delivered` implies sent."""

    pending: int = 0
    sent: int = 0
    delivered: int = 0
    read: int = 0
    replied: int = 0
    failed: int = 0
    in_doubt: int = 0
    clicked: int = 0  # recipients who opened a tracked link (first click)


class CampaignMetrics(msgspec.Struct, frozen=True):
    delivery_rate: float
    read_rate: float
    reply_rate: float
    failure_rate: float
    click_rate: float


def percent(part: int, whole: int) -> float:
    """`part / whole` as a percentage rounded to 2 decimals; 0.0 when `whole` is 0."""
    if whole == 0:
        return 0.0
    return round(part / whole * 100, 2)


def compute_metrics(stats: CampaignStats, total_recipients: int) -> CampaignMetrics:
    return CampaignMetrics(
        delivery_rate=percent(stats.delivered, stats.sent),
        read_rate=percent(stats.read, stats.delivered),
        reply_rate=percent(stats.replied, stats.delivered),
        failure_rate=percent(stats.failed, total_recipients),
        click_rate=percent(stats.clicked, stats.delivered),
    )


def progress_percent(processed: int, total: int) -> float:
    """Share of recipients in a final state; a campaign with none is done (100.0)."""
    if total == 0:
        return 100.0
    return round(processed / total * 100, 2)
