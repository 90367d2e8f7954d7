"""Classification of send results and retry backoff (docs/delivery-guarantees.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.error_classes import ErrorClass, account_pause_reason, backoff_seconds, classify

CODE_CLASSES = {
    130429: ErrorClass.THROTTLED,
    4: ErrorClass.THROTTLED,
    80007: ErrorClass.THROTTLED,
    131000: ErrorClass.TRANSIENT,
    1: ErrorClass.TRANSIENT,
    2: ErrorClass.TRANSIENT,
    131016: ErrorClass.TRANSIENT,
    131056: ErrorClass.REQUEUE,
    131049: ErrorClass.DEFER,
    131026: ErrorClass.PERMANENT,
    131047: ErrorClass.PERMANENT,
    131051: ErrorClass.PERMANENT,
    100: ErrorClass.PERMANENT,
    132000: ErrorClass.PERMANENT,
    132001: ErrorClass.PERMANENT,
    132015: ErrorClass.PERMANENT,
    132999: ErrorClass.PERMANENT,
    190: ErrorClass.ACCOUNT,
    131031: ErrorClass.ACCOUNT,
    131042: ErrorClass.ACCOUNT,
    131048: ErrorClass.ACCOUNT,
    368: ErrorClass.ACCOUNT,
}
ALL_STATUSES = [None, *range(100, 600)]


@pytest.mark.parametrize(("code", "expected"), CODE_CLASSES.items())
def test_listed_codes_decide_whatever_the_status(code: int, expected: ErrorClass) -> None:
    for status in ALL_STATUSES:
        assert classify(status, code) is expected, (status, code)


def fallback(status: int | None) -> ErrorClass:
    if status is None or 500 <= status <= 599:
        return ErrorClass.TRANSIENT
    if status == 429:
        return ErrorClass.THROTTLED
    return ErrorClass.PERMANENT


@pytest.mark.parametrize("code", [None, 131009, 131999, 133000, 0, 3, 99, 470, 131055])
def test_unlisted_codes_fall_back_on_the_status(code: int | None) -> None:
    for status in ALL_STATUSES:
        assert classify(status, code) is fallback(status), (status, code)


def test_status_fallbacks_by_name() -> None:
    assert classify(None, None) is ErrorClass.TRANSIENT
    assert classify(500, None) is ErrorClass.TRANSIENT
    assert classify(503, None) is ErrorClass.TRANSIENT
    assert classify(429, None) is ErrorClass.THROTTLED
    assert classify(400, None) is ErrorClass.PERMANENT
    assert classify(404, None) is ErrorClass.PERMANENT
    assert classify(301, None) is ErrorClass.PERMANENT


def test_code_range_edges_around_template_errors() -> None:
    assert classify(400, 131999) is ErrorClass.PERMANENT  # by status, not by range
    assert classify(500, 131999) is ErrorClass.TRANSIENT
    assert classify(500, 132000) is ErrorClass.PERMANENT
    assert classify(500, 133000) is ErrorClass.TRANSIENT


@given(code=st.integers(min_value=-(2**40), max_value=2**40), status=st.sampled_from(ALL_STATUSES))
def test_classify_is_total(code: int, status: int | None) -> None:
    expected = CODE_CLASSES.get(code)
    if expected is None and 132000 <= code <= 132999:
        expected = ErrorClass.PERMANENT
    assert classify(status, code) is (expected or fallback(status))


# --- backoff ------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    delays = [backoff_seconds(n, base=1.0, cap=30.0, jitter=0.0) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]


def test_backoff_with_jitter_near_one_approaches_the_full_delay() -> None:
    assert backoff_seconds(3, base=1.0, cap=30.0, jitter=0.999) == pytest.approx(3.998)


def test_backoff_survives_huge_attempts() -> None:
    assert backoff_seconds(10_000, base=0.5, cap=60.0, jitter=0.5) == 45.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0, "base": 1.0, "cap": 10.0, "jitter": 0.0},
        {"attempt": 1, "base": 1.0, "cap": 10.0, "jitter": 1.0},
        {"attempt": 1, "base": 1.0, "cap": 10.0, "jitter": -0.1},
        {"attempt": 1, "base": 0.0, "cap": 10.0, "jitter": 0.0},
        {"attempt": 1, "base": 20.0, "cap": 10.0, "jitter": 0.0},
        {"attempt": 1, "base": 1.0, "cap": float("inf"), "jitter": 0.0},
    ],
)
def test_backoff_refuses_nonsense(kwargs: dict[str, float]) -> None:
    attempt = int(kwargs.pop("attempt"))
    with pytest.raises(ValueError):
        backoff_seconds(attempt, **kwargs)


bases = st.floats(min_value=0.001, max_value=10.0)
jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(
    attempt=st.integers(min_value=1, max_value=2_000),
    base=bases,
    cap_factor=st.floats(min_value=1.0, max_value=1e6),
    jitter=jitters,
)
def test_backoff_is_within_bounds(
    attempt: int, base: float, cap_factor: float, jitter: float
) -> None:
    cap = base * cap_factor
    delay = min(cap, base * 2.0 ** min(attempt - 1, 1_000))
    result = backoff_seconds(attempt, base=base, cap=cap, jitter=jitter)
    # Below `delay` for jitter < 1, give or take the last bit of rounding.
    assert delay / 2 <= result <= delay
    assert result <= cap


@given(
    base=bases,
    cap_factor=st.floats(min_value=1.0, max_value=1e6),
    jitter=jitters,
)
def test_backoff_is_monotone_in_attempt_and_reaches_the_cap(
    base: float, cap_factor: float, jitter: float
) -> None:
    cap = base * cap_factor
    delays = [backoff_seconds(n, base=base, cap=cap, jitter=jitter) for n in range(1, 40)]
    assert delays == sorted(delays)
    assert delays[-1] == pytest.approx(cap / 2 + cap / 2 * jitter)


@given(attempt=st.integers(1, 50), low=jitters, high=jitters)
def test_backoff_grows_with_jitter(attempt: int, low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert backoff_seconds(attempt, base=1.0, cap=60.0, jitter=low) <= backoff_seconds(
        attempt, base=1.0, cap=60.0, jitter=high
    )


# --- pause reasons --------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (190, "WhatsApp access token is invalid or expired (error 190)"),
        (368, "WhatsApp account is restricted (error 368)"),
        (131031, "WhatsApp business account is locked (error 131031)"),
        (131042, "WhatsApp business account has a payment problem (error 131042)"),
        (
            131048,
            "WhatsApp account is spam rate limited: too many of its messages were blocked"
            " or reported (error 131048)",
        ),
    ],
)
def test_pause_reasons_for_account_codes(code: int, reason: str) -> None:
    assert classify(400, code) is ErrorClass.ACCOUNT
    assert account_pause_reason(code, "Graph says something technical") == reason
    assert account_pause_reason(code, None) == reason


def test_pause_reason_for_an_unknown_code_uses_the_graph_message() -> None:
    assert (
        account_pause_reason(10, "Application does not have permission for this action")
        == "WhatsApp refused the account: Application does not have permission for this action"
        " (error 10)"
    )
    assert account_pause_reason(10, None) == "WhatsApp refused the account (error 10)"
    assert account_pause_reason(10, "") == "WhatsApp refused the account (error 10)"
