"""A token bucket that paces sends, with no I/O and no clock of its own.

The caller passes `now` (trio time) to every method, so tests drive it with
plain floats and the actors with `trio.current_time()`.

The state is kept as a point in time rather than a token count: `_empty_at` is
the moment at which the bucket held zero tokens, so it holds
`(now - _empty_at) * rate` tokens (at most `capacity`). Taking a token moves
`_empty_at` forward by exactly one interval, so the grant schedule never drifts
however often the consumer wakes up.
"""

from __future__ import annotations

import math

# A consumer that sleeps exactly `seconds_until_available` can wake a rounding
# error early (now + (t - now) != t in floating point); it must still get its
# token, or it would spin on sub-nanosecond waits.
# The tolerance is in time, not tokens: trio's clock reads tens of thousands of
# seconds, where float spacing times a high rate exceeds any fixed token epsilon.
_TIME_TOLERANCE = 1e-6
_CATCH_UP_SECONDS = 0.01


class TokenBucket:
    """Grants whole tokens at `rate_per_second`, holding at most `capacity`.

    It starts with one token, so the first send is immediate. With capacity 1
    consecutive grants are at least one interval (1 / rate) apart; in general
    the grants inside any window of `w` seconds number at most
    `capacity + rate * w`.
    """

    def __init__(self, rate_per_second: float, *, now: float, capacity: float = 1.0) -> None:
        _check_rate(rate_per_second)
        if not (math.isfinite(capacity) and capacity >= 1.0):
            # A bucket that cannot hold one whole token would never grant one.
            raise ValueError(f"capacity must be a finite number >= 1, got {capacity!r}")
        self._rate = rate_per_second
        self._capacity = capacity
        self._empty_at = now - 1.0 / rate_per_second

    @classmethod
    def paced(cls, rate_per_second: float, *, now: float) -> TokenBucket:
        """A bucket for a consumer that sleeps until each token.

        Such a consumer wakes a little late; with capacity 1 the late fraction
        would be lost and the rate would fall short by the lateness (5% at 10/s
        for 5 ms). Half a token more keeps that fraction without ever granting
        two tokens at once at low rates; at high rates 10 ms of tokens may catch up.
        """
        return cls(rate_per_second, now=now, capacity=max(1.5, rate_per_second * _CATCH_UP_SECONDS))

    @property
    def rate_per_second(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    def take(self, now: float, max_tokens: int = 1) -> int:
        """Take as many whole tokens as are available, up to `max_tokens`."""
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        self._drop_overflow(now)
        available = math.floor((now - self._empty_at + _TIME_TOLERANCE) * self._rate)
        granted = max(0, min(max_tokens, available))
        self._empty_at += granted / self._rate
        return granted

    def seconds_until_available(self, now: float, tokens: int = 1) -> float:
        """How long until `tokens` (at most the capacity) can be taken; 0 if now."""
        wanted = min(max(tokens, 1), math.floor(self._capacity))
        self._drop_overflow(now)
        if (now - self._empty_at + _TIME_TOLERANCE) * self._rate >= wanted:
            return 0.0
        return max(self._empty_at + wanted / self._rate - now, _TIME_TOLERANCE)

    def reserve(self, now: float, max_tokens: int, horizon: float) -> list[float]:
        """Take up to `max_tokens` tokens that are due within `horizon` seconds, and
        return the time each is due (never before `now`), in order.

        A consumer that acts on each token at its time gets the same schedule as
        one that waited for every token, but it can prepare a group ahead in one
        step (the campaign actor marks them in one statement).
        """
        if max_tokens < 0 or horizon < 0:
            raise ValueError(f"need max_tokens >= 0 and horizon >= 0, got {max_tokens}, {horizon}")
        self._drop_overflow(now)
        interval = 1.0 / self._rate
        times: list[float] = []
        while len(times) < max_tokens:
            due = self._empty_at + interval
            if due - _TIME_TOLERANCE > now + horizon:
                break
            times.append(max(now, due))
            self._empty_at = due
        return times

    def give_back(self, count: int) -> None:
        """Return the last `count` tokens taken, unused: they are due again as before."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._empty_at -= count / self._rate

    def next_due(self, now: float) -> float:
        """When the next token is due (at most `now` when one is there)."""
        self._drop_overflow(now)
        return self._empty_at + 1.0 / self._rate

    def set_rate(self, rate_per_second: float, now: float) -> None:
        """Change the rate from `now` on.

        Tokens (and the fraction of a token) accrued so far at the old rate are
        kept; the rest accrues at the new rate, so a waiting consumer's next
        token time moves accordingly.
        """
        _check_rate(rate_per_second)
        self._drop_overflow(now)
        tokens = (now - self._empty_at) * self._rate
        self._rate = rate_per_second
        self._empty_at = now - tokens / rate_per_second

    def _drop_overflow(self, now: float) -> None:
        # Tokens beyond capacity are lost, not banked for later.
        self._empty_at = max(self._empty_at, now - self._capacity / self._rate)


def _check_rate(rate_per_second: float) -> None:
    if not (math.isfinite(rate_per_second) and rate_per_second > 0):
        raise ValueError(f"rate_per_second must be a finite number > 0, got {rate_per_second!r}")
