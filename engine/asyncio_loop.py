"""The trio-asyncio loop the asyncio libraries (asyncpg, redis.asyncio,
python-socketio) run in, with cancelled timers purged and ready callbacks run
in rounds.

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

trio-asyncio runs one callback per step of its loop, and each step waits for the
next one under a fresh deadline (`move_on_after` the nearest timer, and there
nearly always is one: asyncpg arms its statement timeout at every query,
engine/store/database.py): a cancel scope registered and pruned for every
callback, about four times the cost of a trio checkpoint. The
step here runs every callback already queued, then checkpoints once, and only
waits under a deadline when nothing is ready. That is asyncio's own rhythm (one
iteration runs the whole ready list), and trio still gets a turn per round.

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
from sniffio import thread_local as sniffio_library
from trio_asyncio._handles import AsyncHandle

# As asyncio's base loop: purge once this many are cancelled and they are more
# than half of the heap.
_MIN_CANCELLED_TO_PURGE = 100
# At most this many callbacks run between two of trio's turns (asyncio runs the
# whole ready list; a bound keeps a callback that queues another from holding on).
_CALLBACKS_PER_ROUND = 64


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


def _round_of_ready_callbacks(loop: Any) -> Callable[..., Any]:
    """A replacement for `loop._main_loop_one` (see the module's docstring)."""
    waiting_step = loop._main_loop_one
    receive_nowait = loop._q_recv.receive_nowait

    async def main_loop_one(no_wait: bool = False) -> None:
        if no_wait:  # the drain at the loop's exit: trio-asyncio's own step
            await waiting_step(no_wait=True)
            return
        ran = 0
        timers: list[asyncio.TimerHandle] = loop._timers
        while ran < _CALLBACKS_PER_ROUND:
            if timers and timers[0].when() <= loop.time():
                handle: Any = heapq.heappop(timers)
            else:
                try:
                    handle = receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(handle, asyncio.TimerHandle):
                    heapq.heappush(timers, handle)
                    continue
            ran += 1
            if isinstance(handle, AsyncHandle):  # a trio task to start, as trio-asyncio does
                handle._context.run(loop._nursery.start_soon, handle._run, name=handle._callback)
                await handle._started.wait()
            elif not handle._cancelled:
                previous, sniffio_library.name = sniffio_library.name, "asyncio"
                try:
                    handle._run()
                finally:
                    sniffio_library.name = previous
        if ran:
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await waiting_step()

    return main_loop_one


@asynccontextmanager
async def open_loop() -> AsyncIterator[Any]:
    """`trio_asyncio.open_loop()`, whose cancelled timers do not pile up and whose
    ready callbacks run in rounds."""
    async with trio_asyncio.open_loop() as loop:
        token = trio.lowlevel.current_trio_token()
        loop._timer_handle_cancelled = _TimerPurge(loop, token)
        loop._asyncgen_finalizer_hook = _deferred(token, loop._asyncgen_finalizer_hook)
        # Looked up at every step of the loop already running: the next step is ours.
        loop._main_loop_one = _round_of_ready_callbacks(loop)
        yield loop


def timer_purge(loop: Any) -> _TimerPurge | None:
    """The purge installed on `loop` by `open_loop`, if any (for tests and metrics)."""
    purge = getattr(loop, "_timer_handle_cancelled", None)
    return purge if isinstance(purge, _TimerPurge) else None
