"""Campaign rates and progress."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.metrics import (
    CampaignMetrics,
    CampaignStats,
    compute_metrics,
    percent,
    progress_percent,
)


def test_spec_formulas() -> None:
    stats = CampaignStats(pending=10, sent=80, delivered=60, read=30, replied=6, failed=10)
    assert compute_metrics(stats, total_recipients=100) == CampaignMetrics(
        delivery_rate=75.0, read_rate=50.0, reply_rate=10.0, failure_rate=10.0, click_rate=0.0
    )


def test_rates_round_to_two_decimals() -> None:
    stats = CampaignStats(sent=3, delivered=2, read=1, replied=1, failed=1)
    assert compute_metrics(stats, total_recipients=7) == CampaignMetrics(
        delivery_rate=66.67, read_rate=50.0, reply_rate=50.0, failure_rate=14.29, click_rate=0.0
    )


def test_zero_denominators_give_zero() -> None:
    assert compute_metrics(CampaignStats(), total_recipients=0) == CampaignMetrics(
        delivery_rate=0.0, read_rate=0.0, reply_rate=0.0, failure_rate=0.0, click_rate=0.0
    )
    # Everything failed before anything was sent.
    assert compute_metrics(CampaignStats(failed=5), total_recipients=5) == CampaignMetrics(
        delivery_rate=0.0, read_rate=0.0, reply_rate=0.0, failure_rate=100.0, click_rate=0.0
    )


def test_structs_encode_with_the_contract_field_names() -> None:
    stats = CampaignStats(sent=1, delivered=1)
    assert msgspec.to_builtins(stats) == {
        "pending": 0,
        "sent": 1,
        "delivered": 1,
        "read": 0,
        "replied": 0,
        "failed": 0,
        "in_doubt": 0,
        "clicked": 0,
    }
    assert msgspec.to_builtins(compute_metrics(stats, 1)) == {
        "delivery_rate": 100.0,
        "read_rate": 0.0,
        "reply_rate": 0.0,
        "failure_rate": 0.0,
        "click_rate": 0.0,
    }


def test_stats_are_immutable() -> None:
    with pytest.raises(AttributeError):
        CampaignStats().sent = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("processed", "total", "expected"),
    [(0, 0, 100.0), (0, 10, 0.0), (1, 3, 33.33), (2, 3, 66.67), (3, 3, 100.0), (1, 1_000_000, 0.0)],
)
def test_progress(processed: int, total: int, expected: float) -> None:
    assert progress_percent(processed, total) == expected


@st.composite
def consistent_stats(draw: st.DrawFn) -> tuple[CampaignStats, int]:
    total = draw(st.integers(0, 10**9))
    sent = draw(st.integers(0, total))
    delivered = draw(st.integers(0, sent))
    read = draw(st.integers(0, delivered))
    replied = draw(st.integers(0, delivered))
    failed = draw(st.integers(0, total))
    return CampaignStats(
        sent=sent, delivered=delivered, read=read, replied=replied, failed=failed
    ), total


def two_decimals(value: float) -> bool:
    return round(value, 2) == value


@given(consistent_stats())
def test_rates_of_consistent_counts_are_percentages(sample: tuple[CampaignStats, int]) -> None:
    stats, total = sample
    metrics = compute_metrics(stats, total)
    for rate in msgspec.structs.astuple(metrics):
        assert 0.0 <= rate <= 100.0
        assert two_decimals(rate)
    if stats.sent and stats.delivered == stats.sent:
        assert metrics.delivery_rate == 100.0


@given(whole=st.integers(1, 10**12), data=st.data())
def test_percent_is_within_half_a_hundredth(whole: int, data: st.DataObject) -> None:
    part = data.draw(st.integers(0, whole))
    assert abs(percent(part, whole) - part / whole * 100) <= 0.005 + 1e-9


@given(total=st.integers(0, 10**9), data=st.data())
def test_progress_is_monotone_and_within_bounds(total: int, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, total))
    b = data.draw(st.integers(a, total))
    assert 0.0 <= progress_percent(a, total) <= progress_percent(b, total) <= 100.0
    assert progress_percent(total, total) == 100.0
