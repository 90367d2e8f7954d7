"""Riding out a database outage: retry the smallest unit of work until PostgreSQL
answers again.

A restart of PostgreSQL, a terminated session or a network blip surfaces as
`DatabaseUnavailable` (engine/store/errors.py). The daemon never stops for it:
the caller retries the one operation it was doing (a batch of outcomes, a lease
renewal), with capped exponential backoff on trio's clock. The cause is logged
once when an outage begins and once when it ends, however many operations wait.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from engine.store.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 2.0


class Outage:
    """Whether the daemon currently knows the database to be unreachable.

    One per process: every operation that waits belongs to the same outage, so
    the log says it once, with its cause, and once when it is over.
    """

    def __init__(self) -> None:
        self.since: float | None = None  # trio time of the first failure
        self.failures = 0  # failed attempts during the current outage
        self.outages = 0  # outages seen since start

    def failed(self, what: str, error: DatabaseUnavailable) -> None:
        self.failures += 1
        if self.since is None:
            self.since = trio.current_time()
            self.outages += 1
            log.warning("database unavailable (%s) while %s; retrying", error, what)

    def succeeded(self) -> None:
        if self.since is not None:
            log.warning(
                "database reachable again after %.1f s (%d failed attempts)",
                trio.current_time() - self.since,
                self.failures,
            )
            self.since = None
            self.failures = 0


OUTAGE = Outage()


def backoff(
    attempt: int, *, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS
) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts failures, from 1)."""
    return float(min(cap, first * 2 ** (attempt - 1)))


async def retrying(
    what: str,
    operation: Callable[..., Awaitable[T]],
    *args: Any,
    max_delay: float = MAX_DELAY_SECONDS,
    outage: Outage = OUTAGE,
    **kwargs: Any,
) -> T:
    """`await operation(*args, **kwargs)`, again and again while it raises
    DatabaseUnavailable; any other error propagates.

    Waits 0.1 s, 0.2 s, ... up to `max_delay` between attempts and never gives up
    (cancel the caller's scope to stop). `what` names the unit of work in the log
    ("database unavailable (<cause>) while <what>"). Only for operations that are
    safe to repeat: one whose commit acknowledgement was lost may have taken effect.
    """
    attempt = 0
    while True:
        try:
            result = await operation(*args, **kwargs)
        except DatabaseUnavailable as error:
            attempt += 1
            outage.failed(what, error)
            await trio.sleep(backoff(attempt, cap=max_delay))
            continue
        outage.succeeded()
        return result
