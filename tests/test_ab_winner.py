"""The A/B winner: the best rate over each variant's sample, ties to the earliest. Pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.ab_winner import WINNER_METRICS, WinnerMetric, choose_winner
from engine.core.metrics import CampaignStats, compute_metrics


def test_the_best_rate_wins() -> None:
    a = CampaignStats(sent=10, delivered=10, read=4, replied=1, clicked=3)
    b = CampaignStats(sent=10, delivered=5, read=3, replied=2, clicked=1)
    assert choose_winner("read_rate", [a, b]).winner == 1  # 60% beats 40%
    assert choose_winner("reply_rate", [a, b]).winner == 1  # 40% beats 10%
    decision = choose_winner("click_rate", [a, b])
    assert decision.winner == 0 and decision.values == (30.0, 20.0)


def test_ties_go_to_the_earliest_variant_and_exact_rates_break_rounding() -> None:
    same = CampaignStats(delivered=3, read=1)
    assert choose_winner("read_rate", [same, same, same]).winner == 0
    nothing = CampaignStats()
    assert choose_winner("read_rate", [nothing, nothing]).winner == 0
    assert choose_winner("read_rate", [nothing, CampaignStats(delivered=1, read=1)]).winner == 1
    # 1/3 and 333/1000 both show as 33.33: the exact comparison picks the first.
    third, almost = CampaignStats(delivered=3, read=1), CampaignStats(delivered=1000, read=333)
    decision = choose_winner("read_rate", [almost, third])
    assert decision.values == (33.3, 33.33) and decision.winner == 1
    with pytest.raises(ValueError):
        choose_winner("read_rate", [])


stats_strategy = st.builds(
    lambda delivered, read, replied, clicked: CampaignStats(
        sent=delivered,
        delivered=delivered,
        read=min(read, delivered),
        replied=min(replied, delivered),
        clicked=min(clicked, delivered),
    ),
    *(st.integers(0, 50) for _ in range(4)),
)


@given(
    metric=st.sampled_from(WINNER_METRICS),
    variants=st.lists(stats_strategy, min_size=2, max_size=5),
)
def test_the_winner_has_the_best_metric_and_is_the_first_such(
    metric: WinnerMetric, variants: list[CampaignStats]
) -> None:
    decision = choose_winner(metric, variants)
    assert decision == choose_winner(metric, list(variants))  # deterministic
    shown = [getattr(compute_metrics(s, s.sent), metric) for s in variants]
    assert list(decision.values) == shown  # the percentages the metrics show
    best = decision.winner
    exact = [getattr(s, _part(metric)) / s.delivered if s.delivered else 0 for s in variants]
    assert all(exact[best] >= e for e in exact)
    assert all(exact[i] < exact[best] for i in range(best))


def _part(metric: WinnerMetric) -> str:
    return {"read_rate": "read", "reply_rate": "replied", "click_rate": "clicked"}[metric]
