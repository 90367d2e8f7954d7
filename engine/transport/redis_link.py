"""The only door from trio into redis.asyncio (it runs in the trio-asyncio loop).

Redis is optional: with `REDIS_URL` set it carries what several daemons must
share. Each call here is one round trip and one bridge crossing.

Times are Redis's own (`TIME`, read inside the scripts), never a daemon's
clock: daemons whose clocks disagree still get slices that do not overlap. A
script answers with a distance from its own "now", which the caller maps onto
trio's clock at the moment the answer arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import trio_asyncio

# Redis's clock, or the one a test injects (passed as ARGV; '' means TIME).
_NOW = """
local now
if ARGV[#ARGV] == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
    now = tonumber(ARGV[#ARGV])
end
"""

# Hands out the next `n` sending turns of a phone number as one time slice
# [start, start + n * spacing), never overlapping a slice given to anyone else,
# never starting before the number's slow-down (after a 130429) ends.
#
# Redis without persistence forgets the budgets when it restarts, while daemons
# may still hold turns it gave out just before. The epoch key tells: when it is
# missing, state was lost, and numbers without a budget key wait `hold` seconds
# from then, long enough for every turn given out before to have left the
# rolling second. Returns start - now, in seconds.
_RESERVE_SLICE = (
    _NOW
    + """
local spacing = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
local day_ms = 86400000
local epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
if epoch == 0 then
    epoch = now
    redis.call('SET', KEYS[3], string.format('%.6f', now))
end
redis.call('PEXPIRE', KEYS[3], day_ms)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local slow = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(tat, now, slow)
if tat == 0 then
    start = math.max(start, epoch + hold)
end
local finish = start + n * spacing
local keep_ms = math.ceil((finish - now) * 1000) + day_ms
redis.call('SET', KEYS[1], string.format('%.6f', finish), 'PX', keep_ms)
return string.format('%.6f', start - now)
"""
)

# No daemon starts a slice for this number before now + seconds.
_SLOW_DOWN = (
    _NOW
    + """
local seconds = tonumber(ARGV[1])
local until_ = now + seconds
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
    local keep_ms = math.max(1, math.ceil(seconds * 1000))
    redis.call('SET', KEYS[1], string.format('%.6f', until_), 'PX', keep_ms)
end
return 1
"""
)


class RedisUnavailable(Exception):
    """Redis cannot be reached, or the connection broke during the call. Whether a
    script that was on the wire ran is unknown."""


_CONNECTION_LOST = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (starting up)
    redis.exceptions.TimeoutError,
    OSError,
)


class RedisLink:
    def __init__(
        self, client: Any, prefix: str, *, server_clock: Callable[[], float] | None = None
    ) -> None:
        """`server_clock`: for tests on a mock clock, the time the scripts use
        instead of Redis's TIME (seconds)."""
        self._client = client
        self._prefix = prefix
        self._server_clock = server_clock
        self._reserve = client.register_script(_RESERVE_SLICE)
        self._slow_down = client.register_script(_SLOW_DOWN)

    async def reserve_slice(self, number: str, *, spacing: float, count: int, hold: float) -> float:
        """Reserve `count` turns of the number's budget, `spacing` seconds apart.
        Returns when the first is due, in seconds from the moment Redis ran the
        script (may be 0); turn i is due `i * spacing` later."""
        keys = [
            f"{self._prefix}budget:{number}",
            f"{self._prefix}slow:{number}",
            f"{self._prefix}epoch",
        ]
        offset = await self._call(self._reserve, keys, [spacing, count, hold, self._now()])
        return float(offset)

    async def slow_down(self, number: str, seconds: float) -> None:
        """No daemon starts a slice for this number in the next `seconds`."""
        await self._call(self._slow_down, [f"{self._prefix}slow:{number}"], [seconds, self._now()])

    async def ping(self) -> bool:
        try:
            return bool(await trio_asyncio.aio_as_trio(self._client.ping)())
        except _CONNECTION_LOST as error:
            raise RedisUnavailable(str(error)) from error

    def _now(self) -> str:
        return "" if self._server_clock is None else f"{self._server_clock():.6f}"

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await trio_asyncio.aio_as_trio(script)(keys=keys, args=args)
        except _CONNECTION_LOST as error:
            raise RedisUnavailable(f"{type(error).__name__}: {error}") from error


@asynccontextmanager
async def open_redis(
    url: str,
    *,
    prefix: str = "campaign-engine:",
    server_clock: Callable[[], float] | None = None,
    call_timeout: float = 2.0,
) -> AsyncIterator[RedisLink]:
    """Must run inside `trio_asyncio.open_loop()`. The client reconnects by itself on
    the next call after a failure; `call_timeout` bounds each call and each connect."""
    client = aioredis.from_url(
        url, socket_timeout=call_timeout, socket_connect_timeout=call_timeout
    )
    try:
        yield RedisLink(client, prefix, server_clock=server_clock)
    finally:
        await trio_asyncio.aio_as_trio(client.aclose)()
