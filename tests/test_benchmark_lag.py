"""The benchmark's webhook-to-API lag: timeline points matched against polled counters."""

from __future__ import annotations

from benchmarks.lag import StatsPoller, summary


def _poller(samples: list[tuple[float, int]]) -> StatsPoller:
    poller = StatsPoller(api=None, campaign_id="c")  # type: ignore[arg-type]  # never polls
    poller.samples = [(at, {"delivered": value}) for at, value in samples]
    return poller


def test_each_point_is_visible_at_the_first_poll_that_counts_it() -> None:
    poller = _poller([(10.0, 0), (10.1, 10), (10.2, 10), (10.3, 30)])
    lags, unseen = poller.lags([[10, 10.05], [20, 10.06], [30, 10.25], [40, 10.3]], "delivered")
    assert [round(lag) for lag in lags] == [50, 240, 50]  # ms
    assert unseen == 1  # 40 was never counted while polling


def test_a_stale_read_and_a_count_seen_before_the_post_do_not_make_negative_lags() -> None:
    # The third poll answered from a stale replica of the counter (5 < 10).
    poller = _poller([(1.0, 10), (1.1, 5), (1.2, 20)])
    lags, unseen = poller.lags([[10, 1.15], [20, 1.15]], "delivered")
    assert [round(lag) for lag in lags] == [50, 50] and unseen == 0


def test_summary_names_its_resolution() -> None:
    figures = summary([10.0, 20.0, 30.0], unseen=2, interval=0.05)
    assert figures == {
        "samples": 3,
        "never_visible_while_polling": 2,
        "p50_ms": 20.0,
        "p99_ms": 30.0,
        "max_ms": 30.0,
        "poll_interval_ms": 50,
    }
