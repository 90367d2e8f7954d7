"""What a failed send means for the recipient, the account and the campaign.

Graph error codes decide first, because WhatsApp answers most errors with a
plain HTTP 400 whatever their nature; the HTTP status only decides for codes
not listed here. The lists are those of docs/delivery-guarantees.md.
"""

from __future__ import annotations

import enum
import math


class ErrorClass(enum.Enum):
    TRANSIENT = "transient"  # retry this recipient with backoff
    THROTTLED = "throttled"  # retry, and slow down every send of the account
    REQUEUE = "requeue"  # back to pending for later; costs no retry
    PERMANENT = "permanent"  # fail this recipient now
    ACCOUNT = "account"  # pause the campaign: no send through this account can succeed
    DEFER = "defer"  # this user got enough marketing for now: try again in a day


# 4 (application request limit) and 80007 (WABA rate limit) are not in the
# contract's list; they are rate limits answered with HTTP 400, and failing
# recipients permanently for them would be wrong.
_THROTTLED_CODES = frozenset({130429, 4, 80007})
# 131016 (service unavailable) is not in the contract's list either.
_TRANSIENT_CODES = frozenset({131000, 1, 2, 131016})
_REQUEUE_CODES = frozenset({131056})  # pair rate limit: too many to this one number
_DEFER_CODES = frozenset({131049})  # per-user marketing limit (docs/delivery-guarantees.md)
# Restrictions of the phone number itself: every campaign sending through it pauses.
_NUMBER_PAUSE_CODES = frozenset({131048, 368})
_PERMANENT_CODES = frozenset({131026, 131047, 131051, 100})
_PERMANENT_CODE_RANGE = range(132000, 133000)  # template errors
_ACCOUNT_PAUSE_REASONS = {
    190: "WhatsApp access token is invalid or expired",
    131031: "WhatsApp business account is locked",
    131042: "WhatsApp business account has a payment problem",
    131048: (
        "WhatsApp account is spam rate limited: too many of its messages were blocked or reported"
    ),
    368: "WhatsApp account is restricted",
}


def classify(http_status: int | None, error_code: int | None) -> ErrorClass:
    """Classify a failed send: the answer's HTTP status (None: no answer) and Graph error code."""
    if error_code is not None:
        if error_code in _THROTTLED_CODES:
            return ErrorClass.THROTTLED
        if error_code in _TRANSIENT_CODES:
            return ErrorClass.TRANSIENT
        if error_code in _REQUEUE_CODES:
            return ErrorClass.REQUEUE
        if error_code in _DEFER_CODES:
            return ErrorClass.DEFER
        if error_code in _PERMANENT_CODES or error_code in _PERMANENT_CODE_RANGE:
            return ErrorClass.PERMANENT
        if error_code in _ACCOUNT_PAUSE_REASONS:
            return ErrorClass.ACCOUNT
    if http_status is None:
        return ErrorClass.TRANSIENT  # timeout or connection error
    if http_status == 429:
        return ErrorClass.THROTTLED
    if 500 <= http_status <= 599:
        return ErrorClass.TRANSIENT
    # Other 4xx, and any answer we cannot act on (a redirect, an unexpected
    # status): asking again the same way will not change it.
    return ErrorClass.PERMANENT


def backoff_seconds(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """The delay before retry number `attempt` (1 = first retry), "equal jitter".

    The exponential delay d = min(cap, base * 2 ** (attempt - 1)) is spread over
    [d / 2, d) by `jitter`, a random fraction in [0, 1) the caller draws, so
    retries of many recipients do not arrive together.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if not (0.0 <= jitter < 1.0):
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    if not (0.0 < base <= cap and math.isfinite(cap)):
        raise ValueError(f"need 0 < base <= cap (finite), got base={base}, cap={cap}")
    # Compare exponents rather than compute 2 ** (attempt - 1), which overflows
    # a float for large attempts.
    if attempt - 1 >= math.log2(cap / base):
        delay = cap
    else:
        delay = min(cap, base * 2.0 ** (attempt - 1))
    return delay / 2 + delay / 2 * jitter


def pauses_number(error_code: int | None) -> bool:
    """Whether the error restricts the phone number, not just one campaign's sends."""
    return error_code in _NUMBER_PAUSE_CODES


def account_pause_reason(error_code: int, message: str | None) -> str:
    """Why a campaign was paused for an account-level error, for a person to read."""
    known = _ACCOUNT_PAUSE_REASONS.get(error_code)
    if known is not None:
        return f"{known} (error {error_code})"
    if message:
        return f"WhatsApp refused the account: {message} (error {error_code})"
    return f"WhatsApp refused the account (error {error_code})"
