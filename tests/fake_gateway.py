"""A scripted `Gateway` for tests and benchmarks: records sends, answers from a script.

Latency uses `trio.sleep`, so it follows `trio.testing.MockClock`. Sends can be
held in flight (`block_after`, `release`) to pause or kill a campaign mid-send.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import trio

from engine.gateway import AccountEndpoint, OutgoingMessage, SendResult

# (message, attempt number for that recipient, 1-based) -> answer; None means success.
Script = Callable[[OutgoingMessage, int], SendResult | None]


class RecordedSend(NamedTuple):
    endpoint: AccountEndpoint
    message: OutgoingMessage
    at: float  # trio.current_time() when the send began


class ScriptedGateway:
    def __init__(self, script: Script | None = None, *, latency: float = 0.0) -> None:
        self.script = script
        self.latency = latency
        self.sends: list[RecordedSend] = []
        self._attempts: Counter[int] = Counter()
        self._wamids = 0
        self._pass_count: int | None = None  # sends allowed through while blocking
        self._gate = trio.Event()
        self._gate.set()
        self._held = 0
        self._held_changed = trio.Event()

    # -- inspection ---------------------------------------------------------

    def sends_for(self, recipient_id: int) -> int:
        return self._attempts[recipient_id]

    @property
    def held(self) -> int:
        """Sends currently waiting at the gate."""
        return self._held

    async def wait_held(self, count: int) -> None:
        """Return once at least `count` sends are waiting at the gate."""
        while self._held < count:
            await self._held_changed.wait()

    # -- holding sends in flight --------------------------------------------

    def block_after(self, count: int) -> None:
        """Let `count` more sends through, then hold every later one until `release()`."""
        self._pass_count = count
        if count == 0 and self._gate.is_set():
            self._gate = trio.Event()

    def release(self) -> None:
        self._pass_count = None
        self._gate.set()

    # -- Gateway ------------------------------------------------------------

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[ScriptedGateway]:
        yield self

    async def send(self, endpoint: AccountEndpoint, message: OutgoingMessage) -> SendResult:
        self.sends.append(RecordedSend(endpoint, message, trio.current_time()))
        self._attempts[message.recipient_id] += 1
        attempt = self._attempts[message.recipient_id]
        await self._pass_gate()
        if self.latency:
            await trio.sleep(self.latency)
        result = self.script(message, attempt) if self.script is not None else None
        if result is None:
            self._wamids += 1
            result = SendResult(
                ok=True, provider_message_id=f"wamid.fake.{self._wamids}", http_status=200
            )
        return result

    async def _pass_gate(self) -> None:
        if self._pass_count is not None:
            if self._pass_count > 0:
                self._pass_count -= 1
                return
            if self._gate.is_set():
                self._gate = trio.Event()
        if self._gate.is_set():
            return
        gate = self._gate
        self._set_held(self._held + 1)
        try:
            await gate.wait()
        finally:
            self._set_held(self._held - 1)

    def _set_held(self, held: int) -> None:
        self._held = held
        self._held_changed.set()
        self._held_changed = trio.Event()
