"""engine.core.retry.decide: what one answer means for the recipient (pure, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.retry import MIN_REQUEUE_SECONDS, RetryPolicy, decide
from engine.gateway import SendResult

POLICY = RetryPolicy(
    max_attempts=3,
    backoff_base_seconds=1.0,
    backoff_max_seconds=30.0,
    requeue_delay_seconds=2.0,
    max_requeues=4,
    throttle_slowdown_seconds=5.0,
)


def graph_error(code: int, status: int = 400) -> SendResult:
    return SendResult(ok=False, http_status=status, error_code=code, error_message=f"error {code}")


def test_accepted_is_sent_with_its_wamid() -> None:
    decision = decide(
        SendResult(ok=True, provider_message_id="wamid.1", http_status=200),
        attempts=1,
        requeues=0,
        policy=POLICY,
        jitter=0.0,
    )
    assert (decision.kind, decision.provider_message_id) == ("sent", "wamid.1")


@pytest.mark.parametrize(
    "result",
    [
        SendResult(ok=False, error_message="timeout", may_have_arrived=True),
        SendResult(ok=False, error_message="connection_lost: reset", may_have_arrived=True),
    ],
)
@pytest.mark.parametrize("attempts", [1, 2, 3])
def test_a_request_that_may_have_arrived_is_in_doubt_never_retried(
    result: SendResult, attempts: int
) -> None:
    decision = decide(result, attempts=attempts, requeues=0, policy=POLICY, jitter=0.5)
    assert decision.kind == "in_doubt"
    assert decision.error_code == "network_error"


@pytest.mark.parametrize(
    "result",
    [
        SendResult(ok=False, error_message="connect_error: refused"),  # never written
        SendResult(ok=False, http_status=503, error_message="unavailable"),
        graph_error(131000, 500),
        graph_error(1),
        graph_error(2),
    ],
)
def test_transient_answers_retry_with_backoff_then_fail_at_the_cap(result: SendResult) -> None:
    first = decide(result, attempts=1, requeues=0, policy=POLICY, jitter=0.0)
    second = decide(result, attempts=2, requeues=0, policy=POLICY, jitter=0.0)
    last = decide(result, attempts=3, requeues=0, policy=POLICY, jitter=0.0)
    assert (first.kind, first.delay) == ("retry", 0.5)
    assert (second.kind, second.delay) == ("retry", 1.0)
    assert last.kind == "failed"
    assert first.slow_account_seconds == 0


def test_throttled_slows_the_account_and_waits_at_least_the_slowdown() -> None:
    decision = decide(graph_error(130429), attempts=1, requeues=0, policy=POLICY, jitter=0.0)
    assert decision.kind == "retry"
    assert decision.slow_account_seconds == 5.0
    assert decision.delay >= 5.0
    capped = decide(graph_error(130429), attempts=3, requeues=0, policy=POLICY, jitter=0.0)
    assert (capped.kind, capped.slow_account_seconds) == ("failed", 5.0)


def test_requeue_waits_at_least_six_seconds_and_is_capped() -> None:
    decision = decide(graph_error(131056), attempts=7, requeues=3, policy=POLICY, jitter=0.0)
    assert decision.kind == "requeue"
    assert decision.delay == MIN_REQUEUE_SECONDS  # the policy's 2 s is below Meta's minimum
    capped = decide(graph_error(131056), attempts=8, requeues=4, policy=POLICY, jitter=0.0)
    assert capped.kind == "failed"
    assert "requeued 4 times" in (capped.error_message or "")


@pytest.mark.parametrize("code", [190, 131031, 131042, 131048, 368])
def test_account_errors_pause_with_a_reason(code: int) -> None:
    decision = decide(graph_error(code), attempts=1, requeues=0, policy=POLICY, jitter=0.0)
    assert decision.kind == "pause"
    assert str(code) in (decision.pause_reason or "")


@pytest.mark.parametrize("code", [131026, 131047, 131051, 100, 132001])
def test_permanent_errors_fail_at_once(code: int) -> None:
    decision = decide(graph_error(code), attempts=1, requeues=0, policy=POLICY, jitter=0.0)
    assert (decision.kind, decision.error_code) == ("failed", str(code))


@given(
    status=st.none() | st.integers(100, 599),
    code=st.none() | st.integers(0, 200_000),
    may_have_arrived=st.booleans(),
    attempts=st.integers(1, 10),
    requeues=st.integers(0, 10),
    jitter=st.floats(0.0, 0.999),
)
def test_every_failure_has_exactly_one_decision_within_the_caps(
    status: int | None,
    code: int | None,
    may_have_arrived: bool,
    attempts: int,
    requeues: int,
    jitter: float,
) -> None:
    result = SendResult(
        ok=False, http_status=status, error_code=code, may_have_arrived=may_have_arrived
    )
    decision = decide(result, attempts=attempts, requeues=requeues, policy=POLICY, jitter=jitter)
    if may_have_arrived:
        assert decision.kind == "in_doubt"
    if decision.kind == "retry":
        assert attempts < POLICY.max_attempts
        assert decision.delay > 0
    if decision.kind == "requeue":
        assert requeues < POLICY.max_requeues
    assert decision.error_code  # every failure names a code for the recipient row


def test_the_per_user_marketing_limit_defers_a_day_and_is_capped() -> None:
    policy = RetryPolicy(max_deferrals=2)
    first = decide(
        graph_error(131049), attempts=1, requeues=0, deferrals=0, policy=policy, jitter=0.0
    )
    second = decide(
        graph_error(131049), attempts=2, requeues=0, deferrals=1, policy=policy, jitter=0.0
    )
    last = decide(
        graph_error(131049), attempts=3, requeues=0, deferrals=2, policy=policy, jitter=0.0
    )
    assert (first.kind, first.delay) == ("defer", 86_400.0)
    assert second.kind == "defer"
    assert (last.kind, last.error_code) == ("failed", "131049")


@pytest.mark.parametrize(("code", "whole_number"), [(131048, True), (368, True), (190, False)])
def test_number_restrictions_pause_every_campaign_of_the_number(
    code: int, whole_number: bool
) -> None:
    decision = decide(graph_error(code), attempts=1, requeues=0, policy=POLICY, jitter=0.0)
    assert (decision.kind, decision.pause_number) == ("pause", whole_number)
