"""Which variant of an A/B test wins, from its sample's counts. Pure.

The metric is one of the campaign's rates (engine/core/metrics.py), computed per
variant over its sample recipients. Rates are compared exactly (as fractions,
not the rounded percentages shown), and a tie goes to the earliest variant in
the campaign's order, so the same counts always give the same winner.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Literal, get_args

import msgspec

from engine.core.metrics import CampaignStats, percent

WinnerMetric = Literal["read_rate", "reply_rate", "click_rate"]
WINNER_METRICS: tuple[WinnerMetric, ...] = get_args(WinnerMetric)


class Decision(msgspec.Struct, frozen=True):
    winner: int  # index of the variant
    values: tuple[float, ...]  # each variant's rate, a percentage as the metrics show it


def _rate(metric: WinnerMetric, stats: CampaignStats) -> tuple[int, int]:
    """(part, whole) of the metric, as engine.core.metrics defines it."""
    match metric:
        case "read_rate":
            return stats.read, stats.delivered
        case "reply_rate":
            return stats.replied, stats.delivered
        case "click_rate":
            return stats.clicked, stats.delivered


def choose_winner(metric: WinnerMetric, per_variant: Sequence[CampaignStats]) -> Decision:
    """The variant with the highest `metric` over its counts; 0 counts as a rate of 0."""
    if not per_variant:
        raise ValueError("an A/B test has at least one variant")
    rates = [_rate(metric, stats) for stats in per_variant]
    exact = [Fraction(part, whole) if whole else Fraction(0) for part, whole in rates]
    # max() keeps the first of equal values: ties go to the earliest variant.
    winner = max(range(len(exact)), key=exact.__getitem__)
    return Decision(winner=winner, values=tuple(percent(p, w) for p, w in rates))
