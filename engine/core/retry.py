"""What to do with a recipient after one request: the decision tree, pure.

Every wait happens while the recipient is `pending` (docs/delivery-guarantees.md):
a retry, a requeue and an account slow-down store the recipient back as pending
with the earliest time it may be sent again; only an answer that proves the
request was not accepted is retried, and a request that may have reached
WhatsApp (a timeout or a lost connection after it was written) is never
repeated: it becomes `in_doubt`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.core.error_classes import (
    ErrorClass,
    account_pause_reason,
    backoff_seconds,
    classify,
    pauses_number,
)
from engine.gateway import SendResult

DecisionKind = Literal["sent", "failed", "retry", "requeue", "defer", "in_doubt", "pause"]

# WhatsApp asks to wait at least this long after 131056 (pair rate limit).
MIN_REQUEUE_SECONDS = 6.0


class RetryPolicy(msgspec.Struct, frozen=True):
    max_attempts: int = 3  # requests per recipient for transient answers
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    requeue_delay_seconds: float = 60.0
    max_requeues: int = 5
    throttle_slowdown_seconds: float = 5.0
    max_deferrals: int = 3
    deferral_seconds: float = 86_400.0  # 131049: WhatsApp's window is a day


class SendDecision(msgspec.Struct, frozen=True):
    kind: DecisionKind
    # retry / requeue: seconds until the recipient may be sent again.
    delay: float = 0.0
    # Stop every send of the account for this long (130429).
    slow_account_seconds: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    provider_message_id: str | None = None
    pause_reason: str | None = None  # kind "pause": why the campaign stops
    pause_number: bool = False  # kind "pause": every campaign of the phone number stops


def error_code_of(result: SendResult) -> str:
    """The code stored on the recipient: Graph's, else the HTTP status, else the transport's."""
    if result.error_code is not None:
        return str(result.error_code)
    if result.http_status is not None:
        return f"http_{result.http_status}"
    return "network_error"


def describe(result: SendResult) -> str:
    if result.http_status is None:
        return result.error_message or "no answer"
    return f"HTTP {result.http_status}: {result.error_message or ''}".strip()


def decide(
    result: SendResult,
    *,
    attempts: int,
    requeues: int,
    policy: RetryPolicy,
    jitter: float,
    deferrals: int = 0,
) -> SendDecision:
    """`attempts` counts the requests made for this recipient, this one included;
    `requeues` and `deferrals` the times it was requeued and deferred before;
    `jitter` is a random fraction in [0, 1) that spreads backoffs."""
    if result.ok:
        return SendDecision("sent", provider_message_id=result.provider_message_id)
    code, message = error_code_of(result), result.error_message or describe(result)
    if result.may_have_arrived:
        return SendDecision("in_doubt", error_code=code, error_message=message)
    error_class = classify(result.http_status, result.error_code)
    if error_class in (ErrorClass.TRANSIENT, ErrorClass.THROTTLED):
        slow = policy.throttle_slowdown_seconds if error_class is ErrorClass.THROTTLED else 0.0
        if attempts >= policy.max_attempts:
            return SendDecision(
                "failed", slow_account_seconds=slow, error_code=code, error_message=message
            )
        delay = backoff_seconds(
            attempts,
            base=policy.backoff_base_seconds,
            cap=policy.backoff_max_seconds,
            jitter=jitter,
        )
        return SendDecision(
            "retry",
            delay=max(delay, slow),
            slow_account_seconds=slow,
            error_code=code,
            error_message=message,
        )
    if error_class is ErrorClass.REQUEUE:
        if requeues >= policy.max_requeues:
            return SendDecision(
                "failed",
                error_code=code,
                error_message=f"{message} (requeued {requeues} times)",
            )
        delay = max(MIN_REQUEUE_SECONDS, policy.requeue_delay_seconds)
        return SendDecision("requeue", delay=delay, error_code=code, error_message=message)
    if error_class is ErrorClass.DEFER:
        if deferrals >= policy.max_deferrals:
            return SendDecision(
                "failed", error_code=code, error_message=f"{message} (deferred {deferrals} times)"
            )
        return SendDecision(
            "defer", delay=policy.deferral_seconds, error_code=code, error_message=message
        )
    if error_class is ErrorClass.ACCOUNT:
        reason = account_pause_reason(result.error_code or 0, result.error_message)
        return SendDecision(
            "pause",
            error_code=code,
            error_message=message,
            pause_reason=reason,
            pause_number=pauses_number(result.error_code),
        )
    return SendDecision("failed", error_code=code, error_message=message)
