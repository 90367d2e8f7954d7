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
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio_asyncio

# As asyncio's base loop: purge once this many are cancelled and they are more
# than half of the heap.
_MIN_CANCELLED_TO_PURGE = 100


class _TimerPurge:
    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self.cancelled = 0
        self.purges = 0

    def __call__(self, handle: asyncio.TimerHandle) -> None:
        """Called by `TimerHandle.cancel()` (the hook asyncio's loops implement)."""
        self.cancelled += 1
        timers: list[asyncio.TimerHandle] = self._loop._timers
        if self.cancelled > _MIN_CANCELLED_TO_PURGE and 2 * self.cancelled > len(timers):
            # In place: the loop's scheduler holds this list. Timers still on their
            # way to the heap (in the loop's queue) are counted when they arrive.
            timers[:] = [timer for timer in timers if not timer.cancelled()]
            heapq.heapify(timers)
            self.cancelled = 0
            self.purges += 1


@asynccontextmanager
async def open_loop() -> AsyncIterator[Any]:
    """`trio_asyncio.open_loop()`, whose cancelled timers do not pile up."""
    async with trio_asyncio.open_loop() as loop:
        loop._timer_handle_cancelled = _TimerPurge(loop)
        yield loop


def timer_purge(loop: Any) -> _TimerPurge | None:
    """The purge installed on `loop` by `open_loop`, if any (for tests and metrics)."""
    purge = getattr(loop, "_timer_handle_cancelled", None)
    return purge if isinstance(purge, _TimerPurge) else None
