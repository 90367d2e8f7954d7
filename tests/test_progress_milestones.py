"""engine.core.progress: which events a stored batch triggers, with which counts (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.core.metrics import CampaignStats
from engine.core.progress import crosses_threshold, milestones


def test_a_batch_crossing_two_thresholds_reports_each_at_its_own_counts() -> None:
    # 95 processed before; the batch holds 12 finals; stored counts after it:
    latest = CampaignStats(pending=893, sent=100, failed=7, delivered=40)
    finals = ["sent"] * 4 + ["failed"] + ["sent"] * 7  # thresholds at 100 (5th) and 105 (10th)
    found = milestones(95, finals, latest, progress_every=100, stats_every=5)  # type: ignore[arg-type]
    assert [(m.processed, m.progress, m.stats_due) for m in found] == [
        (100, True, True),
        (105, False, True),
    ]
    at_100, at_105 = found[0].stats, found[1].stats
    assert (at_100.sent, at_100.failed, at_100.pending) == (93, 7, 900)
    assert (at_105.sent, at_105.failed, at_105.pending) == (98, 7, 895)
    assert at_100.delivered == 40  # counts the batch did not change stay as stored


def test_no_threshold_no_read() -> None:
    assert not crosses_threshold(101, 48, progress_every=100, stats_every=50)
    assert crosses_threshold(101, 49, progress_every=100, stats_every=50)
    assert milestones(101, ["sent"] * 48, CampaignStats(), progress_every=100, stats_every=50) == []


@given(
    before=st.integers(0, 500),
    finals=st.lists(st.sampled_from(["sent", "failed"]), max_size=300),
    every_progress=st.integers(1, 120),
    every_stats=st.integers(1, 120),
)
def test_every_threshold_exactly_once_and_counts_add_up(
    before: int, finals: list[str], every_progress: int, every_stats: int
) -> None:
    latest = CampaignStats(
        pending=1000,
        sent=before + finals.count("sent"),
        failed=finals.count("failed"),
    )
    found = milestones(
        before,
        finals,  # type: ignore[arg-type]
        latest,
        progress_every=every_progress,
        stats_every=every_stats,
    )
    after = before + len(finals)
    expected = [
        n for n in range(before + 1, after + 1) if n % every_progress == 0 or n % every_stats == 0
    ]
    assert [m.processed for m in found] == expected
    assert bool(found) == (
        bool(expected)
        and crosses_threshold(
            before, len(finals), progress_every=every_progress, stats_every=every_stats
        )
    )
    for m in found:
        done = m.processed - before
        assert m.stats.sent == before + finals[:done].count("sent")
        assert m.stats.failed == finals[:done].count("failed")
        assert m.stats.sent + m.stats.failed + m.stats.pending == latest.sent + latest.failed + 1000
