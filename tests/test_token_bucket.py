"""TokenBucket: pacing accuracy, burst bound, live rate changes.

The window bound tested everywhere: for a bucket of `capacity` C at `rate` r,
the grants at times inside any half-open window [t, t + w) number at most
C + r * (w + T), where T = 1 µs is the bucket's time tolerance: a token may be
granted up to 1 µs early, so a consumer that sleeps exactly until it is due
never spins on a rounding error. With capacity 1 the grants are also evenly
spaced: consecutive grants are never closer than one interval less 1 µs.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.token_bucket import TokenBucket

TOLERANCE = 1e-6  # engine/token_bucket.py: a token may come this much early

HOUR = 3600.0


def patient_consumer(rate: float, duration: float, capacity: float = 1.0) -> list[float]:
    """Grant times of a consumer that always sleeps exactly until the next token."""
    bucket = TokenBucket(rate, now=0.0, capacity=capacity)
    now = 0.0
    grant_times: list[float] = []
    while True:
        now += bucket.seconds_until_available(now)
        if now >= duration:
            return grant_times
        assert bucket.take(now) == 1, f"no token at {now} after waiting for it"
        grant_times.append(now)


def most_grants_in_window(grant_times: list[float], window: float) -> int:
    # The busiest half-open window can always be slid right to start on a grant.
    return max(
        (
            bisect.bisect_left(grant_times, start + window) - index
            for index, start in enumerate(grant_times)
        ),
        default=0,
    )


def smallest_gap(grant_times: list[float]) -> float:
    return min((b - a for a, b in itertools.pairwise(grant_times)), default=math.inf)


@pytest.mark.parametrize("per_minute", [1, 7, 20, 600, 4_800, 60_000])
def test_patient_consumer_gets_the_rate_for_an_hour(per_minute: int) -> None:
    rate = per_minute / 60.0
    grant_times = patient_consumer(rate, HOUR)

    assert grant_times[0] == 0.0  # first send is immediate
    expected = rate * HOUR
    assert abs(len(grant_times) - expected) <= 0.01 * expected
    for window in (1.0, 60.0):
        assert most_grants_in_window(grant_times, window) <= 1 + rate * window
    assert smallest_gap(grant_times) >= (1.0 / rate) * (1 - 1e-9)


def test_first_token_is_available_at_once() -> None:
    bucket = TokenBucket(1 / 60, now=500.0)
    assert bucket.seconds_until_available(500.0) == 0.0
    assert bucket.take(500.0) == 1
    assert bucket.seconds_until_available(500.0) == pytest.approx(60.0)
    assert bucket.take(500.0) == 0


def test_seconds_until_available_counts_down() -> None:
    bucket = TokenBucket(2.0, now=0.0)
    bucket.take(0.0)
    assert bucket.seconds_until_available(0.1) == pytest.approx(0.4)
    assert bucket.take(0.1) == 0
    assert bucket.seconds_until_available(0.5) == 0.0
    assert bucket.take(0.5) == 1


def test_late_consumer_takes_a_burst_only_up_to_capacity() -> None:
    bucket = TokenBucket(1.0, now=0.0, capacity=5)
    assert bucket.take(0.0, max_tokens=10) == 1  # starts with one token, not a full bucket
    assert bucket.take(1_000.0, max_tokens=10) == 5
    assert bucket.take(1_000.0, max_tokens=10) == 0
    assert bucket.seconds_until_available(1_000.0) == pytest.approx(1.0)


def test_late_consumer_with_capacity_one_takes_one() -> None:
    bucket = TokenBucket(10.0, now=0.0)
    bucket.take(0.0)
    assert bucket.take(60.0, max_tokens=100) == 1
    # Nothing was banked while it slept: the next token is one interval later.
    assert bucket.seconds_until_available(60.0) == pytest.approx(0.1)


def test_take_respects_max_tokens() -> None:
    bucket = TokenBucket(1.0, now=0.0, capacity=10)
    bucket.take(0.0)
    assert bucket.take(20.0, max_tokens=3) == 3
    assert bucket.take(20.0, max_tokens=0) == 0
    assert bucket.take(20.0, max_tokens=100) == 7


def test_fractional_capacity_floors_the_burst() -> None:
    bucket = TokenBucket(1.0, now=0.0, capacity=2.5)
    bucket.take(0.0)
    assert bucket.take(100.0, max_tokens=10) == 2
    # The half token left over counts toward the next one.
    assert bucket.seconds_until_available(100.0) == pytest.approx(0.5)


def test_set_rate_right_after_a_grant_spaces_the_next_grant_at_the_new_rate() -> None:
    bucket = TokenBucket(1.0, now=0.0)
    assert bucket.take(0.0) == 1
    bucket.set_rate(10.0, now=0.0)
    assert bucket.rate_per_second == 10.0
    wait = bucket.seconds_until_available(0.0)
    assert wait == pytest.approx(0.1)
    assert bucket.take(wait) == 1


def test_set_rate_while_waiting_keeps_the_part_accrued_at_the_old_rate() -> None:
    # Grant at 0 at 1/s; at 0.5 half a token has accrued. At 10/s the other half
    # takes 0.05 s, so the gap between the two grants around the change is 0.55 s.
    bucket = TokenBucket(1.0, now=0.0)
    assert bucket.take(0.0) == 1
    bucket.set_rate(10.0, now=0.5)
    next_grant = 0.5 + bucket.seconds_until_available(0.5)
    assert next_grant == pytest.approx(0.55)
    assert bucket.take(next_grant) == 1
    # From then on the grants are 0.1 s apart.
    assert bucket.seconds_until_available(next_grant) == pytest.approx(0.1)


def test_slowing_down_while_waiting_postpones_the_next_grant() -> None:
    bucket = TokenBucket(60 / 60, now=0.0)  # 60/min
    bucket.take(0.0)
    bucket.set_rate(6 / 60, now=0.5)  # 6/min: the missing half token takes 5 s
    assert bucket.seconds_until_available(0.5) == pytest.approx(5.0)
    assert bucket.take(5.0) == 0
    assert bucket.take(5.5) == 1


def test_set_rate_mid_way_through_a_patient_run() -> None:
    bucket = TokenBucket(20 / 60, now=0.0)
    now = 0.0
    grant_times: list[float] = []
    for _ in range(10):
        now += bucket.seconds_until_available(now)
        assert bucket.take(now) == 1
        grant_times.append(now)
    bucket.set_rate(120 / 60, now=now)
    for _ in range(10):
        now += bucket.seconds_until_available(now)
        assert bucket.take(now) == 1
        grant_times.append(now)
    gaps = [b - a for a, b in itertools.pairwise(grant_times)]
    assert gaps[:9] == pytest.approx([3.0] * 9)
    assert gaps[9:] == pytest.approx([0.5] * 10)


def test_set_rate_does_not_bank_tokens_beyond_capacity() -> None:
    bucket = TokenBucket(1.0, now=0.0, capacity=3)
    bucket.take(0.0)
    bucket.set_rate(0.001, now=100.0)  # full (3 tokens) when the rate drops
    assert bucket.take(100.0, max_tokens=10) == 3
    assert bucket.seconds_until_available(100.0) == pytest.approx(1_000.0)


@pytest.mark.parametrize("bad_rate", [0.0, -1.0, -0.001, math.nan, math.inf])
def test_rate_must_be_positive_and_finite(bad_rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_second"):
        TokenBucket(bad_rate, now=0.0)
    bucket = TokenBucket(1.0, now=0.0)
    with pytest.raises(ValueError, match="rate_per_second"):
        bucket.set_rate(bad_rate, now=1.0)
    assert bucket.rate_per_second == 1.0


@pytest.mark.parametrize("bad_capacity", [0.0, 0.5, -1.0, math.nan, math.inf])
def test_capacity_must_hold_a_whole_token(bad_capacity: float) -> None:
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(1.0, now=0.0, capacity=bad_capacity)


def test_negative_max_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBucket(1.0, now=0.0).take(0.0, max_tokens=-1)


rates = st.floats(min_value=1 / 60, max_value=2_000.0)
capacities = st.integers(min_value=1, max_value=50).map(float) | st.floats(1.0, 50.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    capacity=capacities,
    # Each step: how long the consumer sleeps (in intervals), how many it asks for.
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=20.0), st.integers(0, 60)),
        min_size=1,
        max_size=200,
    ),
)
def test_any_consumer_stays_within_the_window_bound(
    rate: float, capacity: float, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, now=0.0, capacity=capacity)
    interval = 1.0 / rate
    now = 0.0
    grant_times: list[float] = []
    for sleep_intervals, wanted in steps:
        now += sleep_intervals * interval
        granted = bucket.take(now, max_tokens=wanted)
        assert 0 <= granted <= min(wanted, capacity)
        grant_times.extend([now] * granted)
        # The bucket tells the truth about availability.
        if bucket.seconds_until_available(now) == 0.0:
            assert bucket.take(now, max_tokens=1) == 1
            grant_times.append(now)

    # Starting with one token, nobody gets more than 1 + rate * elapsed.
    assert len(grant_times) <= 1 + rate * (now + TOLERANCE) + 1e-9
    for window_intervals in (0.5, 1.0, 3.0, 10.0, 100.0):
        window = window_intervals * interval
        assert most_grants_in_window(grant_times, window) <= capacity + rate * (window + TOLERANCE)


@settings(max_examples=100, deadline=None)
@given(rate=rates, capacity=capacities)
def test_patient_consumer_is_evenly_spaced_and_on_rate(rate: float, capacity: float) -> None:
    # A consumer that never oversleeps never finds more than one token waiting,
    # whatever the capacity.
    duration = 500 / rate
    grant_times = patient_consumer(rate, duration, capacity)
    # Grants fall at k / rate: ceil(rate * duration) of them, give or take the
    # one due exactly at the end.
    assert rate * duration - 1e-6 <= len(grant_times) <= rate * duration + 1 + 1e-6
    assert smallest_gap(grant_times) >= (1.0 / rate) * (1 - 1e-9)


@settings(max_examples=200, deadline=None)
@given(old_rate=rates, new_rate=rates, elapsed_fraction=st.floats(0.0, 1.0))
def test_set_rate_keeps_the_accrued_fraction(
    old_rate: float, new_rate: float, elapsed_fraction: float
) -> None:
    bucket = TokenBucket(old_rate, now=0.0)
    bucket.take(0.0)
    change_at = elapsed_fraction / old_rate  # before the next token at the old rate
    bucket.set_rate(new_rate, now=change_at)
    wait = bucket.seconds_until_available(change_at)
    assert wait == pytest.approx((1 - elapsed_fraction) / new_rate, rel=1e-6, abs=2e-6)
    assert bucket.take(change_at + wait) == 1


@settings(max_examples=30, deadline=None)
@given(
    per_minute=st.sampled_from([60.0, 600.0, 1_200.0, 6_000.0, 60_000.0]),
    seed=st.integers(0, 2**32),
)
def test_a_paced_consumer_that_wakes_late_keeps_the_rate(per_minute: float, seed: int) -> None:
    """Real sleeps end late. The paced bucket keeps the late fraction, so the rate
    holds within 1%; below 150/s it never grants two tokens at once."""
    rng = random.Random(seed)
    rate = per_minute / 60
    bucket = TokenBucket.paced(rate, now=0.0)
    now, granted, most_at_once = 0.0, 0, 0
    while now < 600.0:
        now += bucket.seconds_until_available(now) + rng.uniform(
            0.0, 0.004
        )  # wakes up to 4 ms late
        taken = bucket.take(now, max_tokens=1_000)
        granted += taken
        most_at_once = max(most_at_once, taken)
    assert abs(granted - rate * now) <= 0.01 * rate * now
    if rate < 150:
        assert most_at_once == 1


def test_seconds_until_several_tokens_counts_to_the_last_one_and_caps_at_capacity() -> None:
    bucket = TokenBucket(100.0, now=0.0, capacity=5.0)
    assert bucket.take(0.0) == 1  # empty now
    assert bucket.seconds_until_available(0.0, 3) == pytest.approx(0.03)
    assert bucket.seconds_until_available(0.0, 50) == pytest.approx(0.05)  # capacity bounds it
    assert bucket.take(0.03, 10) == 3
    assert bucket.seconds_until_available(1.0, 5) == 0.0


# --- reserve: turns taken ahead, each acted on at its own time -----------------------


def test_reserve_gives_the_same_schedule_as_waiting_for_each_token() -> None:
    rate, horizon = 250.0, 0.01
    bucket = TokenBucket(rate, now=0.0)
    now, times = 0.0, []
    while now < 2.0:
        turns = bucket.reserve(now, 100, horizon)
        assert all(now <= t <= now + horizon + TOLERANCE for t in turns)
        times.extend(turns)
        now = max(now, bucket.next_due(now) - horizon)
        now += 0.0007  # the consumer wakes a little late
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / rate - TOLERANCE
    assert len(times) == pytest.approx(2.0 * rate, abs=3)


@given(
    rate=st.floats(0.5, 2000.0),
    horizon=st.floats(0.0, 0.05),
    wakes=st.lists(st.floats(0.0, 0.3), min_size=1, max_size=200),
)
@settings(max_examples=200)
def test_reserved_turns_never_exceed_rate_plus_one_in_any_second(
    rate: float, horizon: float, wakes: list[float]
) -> None:
    bucket = TokenBucket(rate, now=0.0)
    now, times = 0.0, []
    for gap in wakes:
        times.extend(bucket.reserve(now, 50, horizon))
        now += gap
    times.sort()
    for i, start in enumerate(times):
        inside = bisect.bisect_left(times, start + 1.0) - i
        assert inside <= rate + 1 + rate * TOLERANCE, (start, inside)


def test_reserve_after_a_rate_change_uses_the_new_rate() -> None:
    bucket = TokenBucket(1000.0, now=0.0)
    assert len(bucket.reserve(0.0, 100, 0.01)) == 11  # due at 0, 1 ms, ..., 10 ms
    bucket.set_rate(1.0, 0.0105)
    assert bucket.reserve(0.0105, 100, 0.01) == []
    # Half a token had accrued at the old rate: the next comes half a second later.
    assert bucket.next_due(0.0105) == pytest.approx(0.5105)


def test_tokens_given_back_are_due_again_as_reserved() -> None:
    # A group's turns the phone number had no turn for (engine/actors/campaign/dispatch.py).
    bucket = TokenBucket.paced(10.0, now=0.0)
    assert bucket.reserve(0.0, 3, horizon=0.25) == pytest.approx([0.0, 0.1, 0.2])
    bucket.give_back(2)
    assert bucket.next_due(0.05) == pytest.approx(0.1)
    assert bucket.reserve(0.05, 3, horizon=0.25) == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        bucket.give_back(-1)
