"""The only door from trio into redis.asyncio (it runs in the trio-asyncio loop).

Redis is optional: with `REDIS_URL` set it carries what several daemons must
share. Each call here is one round trip and one bridge crossing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import trio_asyncio

# Hands out the next `n` sending slots of an account as one time slice
# [start, start + n/rate), never overlapping a slice given to anyone else, and
# never starting before the account's slow-down (after a 130429) ends.
_RESERVE_SLICE = """
local rate = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local slow = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(tat, now, slow)
local finish = start + n / rate
local keep_ms = math.ceil((finish - now) * 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.6f', finish), 'PX', keep_ms)
return string.format('%.6f', start)
"""


class RedisLink:
    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE_SLICE)

    async def reserve_slice(self, account_id: str, *, rate: float, count: int, now: float) -> float:
        """Reserve `count` slots of the account's budget; returns the slice's start
        (seconds since the epoch). Slot i is at start + i/rate."""
        keys = [f"{self._prefix}budget:{account_id}", f"{self._prefix}slow:{account_id}"]
        start = await trio_asyncio.aio_as_trio(self._reserve)(keys=keys, args=[rate, count, now])
        return float(start)

    async def slow_account(self, account_id: str, *, until: float, now: float) -> None:
        """No daemon sends for this account before `until` (epoch seconds)."""
        milliseconds = max(1, int((until - now) * 1000))
        await trio_asyncio.aio_as_trio(self._client.set)(
            f"{self._prefix}slow:{account_id}", f"{until:.6f}", px=milliseconds
        )

    async def ping(self) -> bool:
        return bool(await trio_asyncio.aio_as_trio(self._client.ping)())


@asynccontextmanager
async def open_redis(url: str, *, prefix: str = "campaign-engine:") -> AsyncIterator[RedisLink]:
    """Must run inside `trio_asyncio.open_loop()`."""
    client = aioredis.from_url(url)
    try:
        yield RedisLink(client, prefix)
    finally:
        await trio_asyncio.aio_as_trio(client.aclose)()
