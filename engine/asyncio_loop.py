"""The trio-asyncio loop the asyncio libraries (asyncpg, redis.asyncio,
python-socketio) run in, with cancelled timers purged.

asyncio's own loop drops cancelled timers from its heap once they are more than
half of it. trio-asyncio keeps every one until its moment comes, and the
libraries cancel a timer at nearly every call: asyncpg's pool arms a 300 s
inactivity timer at each release and cancels it at the next acquire,
`asyncio.wait_for` and redis' timeouts arm one per call. At a thousand calls a
second that is hundreds of thousands of dead timers, each holding its callback
and the context it was armed in (an HTTP request's, with its body): memory that
grows with the work done, and a heap that costs more at every push.

So the loop here counts cancellations as asyncio's does and rebuilds the heap
without them when they pass the same threshold.

Both that rebuild and asyncio's finalizer of abandoned async generators run at one
of trio's safe points (`TrioToken.run_sync_soon`), never where they are triggered:
a cancellation or a finalizer can come from the garbage collector in the middle
of any code, trio's own channel operations included, and trio-asyncio's queue of
callbacks is a trio channel that must not be entered from inside itself.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_asyncio

# As asyncio's base loop: purge once this many are cancelled and they are more
# than half of the heap.
_MIN_CANCELLED_TO_PURGE = 100


class _TimerPurge:
    def __init__(self, loop: Any, token: trio.lowlevel.TrioToken) -> None:
        self._loop = loop
        self._token = token
        self._scheduled = False
        self.cancelled = 0
        self.purges = 0

    def __call__(self, handle: asyncio.TimerHandle) -> None:
        """Called by `TimerHandle.cancel()` (the hook asyncio's loops implement)."""
        self.cancelled += 1
        timers: list[asyncio.TimerHandle] = self._loop._timers
        if (
            not self._scheduled
            and self.cancelled > _MIN_CANCELLED_TO_PURGE
            and 2 * self.cancelled > len(timers)
        ):
            self._scheduled = True
            self._token.run_sync_soon(self._purge)

    def _purge(self) -> None:
        # In place: the loop's scheduler holds this list. Timers still on their way
        # to the heap (in the loop's queue) are counted when they arrive.
        timers: list[asyncio.TimerHandle] = self._loop._timers
        timers[:] = [timer for timer in timers if not timer.cancelled()]
        heapq.heapify(timers)
        self.cancelled = 0
        self.purges += 1
        self._scheduled = False


def _deferred(token: trio.lowlevel.TrioToken, hook: Callable[[Any], None]) -> Callable[[Any], None]:
    def finalize(agen: Any) -> None:
        try:
            hook(agen)
        except RuntimeError:  # the loop closed meanwhile: nothing left to finalize it in
            pass

    def at_a_safe_point(agen: Any) -> None:
        try:
            token.run_sync_soon(finalize, agen)
        except trio.RunFinishedError:
            pass  # after the run, as asyncio's own closed loop does

    return at_a_safe_point


@asynccontextmanager
async def open_loop() -> AsyncIterator[Any]:
    """`trio_asyncio.open_loop()`, whose cancelled timers do not pile up."""
    async with trio_asyncio.open_loop() as loop:
        token = trio.lowlevel.current_trio_token()
        loop._timer_handle_cancelled = _TimerPurge(loop, token)
        loop._asyncgen_finalizer_hook = _deferred(token, loop._asyncgen_finalizer_hook)
        yield loop


def timer_purge(loop: Any) -> _TimerPurge | None:
    """The purge installed on `loop` by `open_loop`, if any (for tests and metrics)."""
    purge = getattr(loop, "_timer_handle_cancelled", None)
    return purge if isinstance(purge, _TimerPurge) else None
