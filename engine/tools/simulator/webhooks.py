"""Status webhooks, posted as WhatsApp posts them: one status per request (unless
`webhook_batch` groups those due together for one number), signed over the exact bytes,
each message's statuses in order — sent, then delivered, then read (a share), and a share
of inbound replies.

A send only pushes its statuses onto a heap (no I/O, no await), so posting never holds up
the send endpoint. `webhook_posters` tasks each own one keep-alive connection and one heap;
all statuses of a message go to the same poster, which posts them one after the other, so
their order survives any backlog or retry.
"""

from __future__ import annotations

import heapq
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import trio

from engine.core.webhook_payload import sign
from engine.tools.simulator import notifications
from engine.tools.simulator.config import SimulatorConfig
from engine.tools.simulator.post_connection import PostConnection, PostError
from engine.tools.simulator.record import SimulatorState
from engine.transport.http1 import split_url

log = logging.getLogger(__name__)

# A scheduled item: (due, seq, kind, phone_number_id, wamid, to, callback, detail), where
# detail is 1 for a template (billed) and 0 otherwise, or the error code of a `failed`.
# `seq` is unique, so tuples never compare beyond it.
_Item = tuple[float, int, str, str, str, str, str | None, int]

# WhatsApp retries a webhook for days; here ~16 s, then the request is dropped and counted.
# A poster waits out its retries before its next request: a receiver answering 503 (its
# backlog full) slows the simulator down instead of losing statuses.
_RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class _Poster:
    """One keep-alive connection and the heap of what it is to post."""

    def __init__(self) -> None:
        self.heap: list[_Item] = []
        self.wake = trio.Event()

    def push(self, item: _Item) -> None:
        heapq.heappush(self.heap, item)
        if self.heap[0] is item:  # a new earliest item: the poster may sleep too long
            self.wake.set()


class Webhooks:
    def __init__(self, config: SimulatorConfig, state: SimulatorState) -> None:
        assert config.webhook_url is not None
        self.config = config
        self.state = state
        self.url = config.webhook_url
        self.origin, self.target = split_url(config.webhook_url)
        self.random = random.Random(None if config.seed is None else config.seed + 1)
        self.posters = [_Poster() for _ in range(max(1, config.webhook_posters))]
        self.display_of: Callable[[str], str] = lambda _phone: config.display_phone_number
        self._seq = 0
        self._messages = 0
        self._replies = 0
        self._control = PostConnection(self.origin, self.target)
        self._control_lock = trio.Lock()

    # -- scheduling (called by the send endpoint: never awaits) ----------------------------

    def _delay(self, ms: float) -> float:
        jitter = self.config.jitter_ms
        return (ms + (self.random.uniform(0.0, jitter) if jitter > 0 else 0.0)) / 1000

    def _poster(self, kinds: int) -> _Poster | None:
        """The poster of the next message, or None if the backlog is full (counted)."""
        if self.state.webhook_pending + kinds > self.config.max_pending_webhooks:
            self.state.webhook_dropped += kinds
            return None
        self.state.webhook_pending += kinds
        poster = self.posters[self._messages % len(self.posters)]
        self._messages += 1
        return poster

    def _item(self, due: float, kind: str, phone: str, wamid: str, to: str,
              callback: str | None, detail: int) -> _Item:  # fmt: skip
        self._seq += 1
        return (due, self._seq, kind, phone, wamid, to, callback, detail)

    def schedule_statuses(
        self, phone_number_id: str, wamid: str, to: str, callback: str | None, template: bool
    ) -> None:
        config = self.config
        now = trio.current_time()
        kinds = ["sent", "delivered"]
        if config.read_share > 0 and self.random.random() < config.read_share:
            kinds.append("read")
        if config.reply_share > 0 and self.random.random() < config.reply_share:
            kinds.append("reply")
        poster = self._poster(len(kinds))
        if poster is None:
            return
        delays = {"sent": config.sent_ms, "delivered": config.delivered_ms,
                  "read": config.read_ms, "reply": config.reply_ms}  # fmt: skip
        due = now
        for kind in kinds:
            # Never before the previous status of this message, whatever the jitter.
            due = max(due, now + self._delay(delays[kind]))
            poster.push(self._item(due, kind, phone_number_id, wamid, to, callback, int(template)))

    def schedule_failure(
        self, phone_number_id: str, wamid: str, to: str, callback: str | None, code: int
    ) -> None:
        """A `failed` status carrying `code` for a send that was accepted."""
        poster = self._poster(1)
        if poster is None:
            return
        due = trio.current_time() + self._delay(self.config.sent_ms)
        poster.push(self._item(due, "failed", phone_number_id, wamid, to, callback, code))
        self.state.failed_by_webhook += 1

    # -- posting ---------------------------------------------------------------------------

    async def run_poster(self, poster: _Poster) -> None:
        connection = PostConnection(self.origin, self.target)
        try:
            while True:  # until cancelled with the simulator
                heap = poster.heap
                if not heap:
                    await poster.wake.wait()
                    poster.wake = trio.Event()
                    continue
                delay = heap[0][0] - trio.current_time()
                if delay > 0:
                    with trio.move_on_after(delay):
                        await poster.wake.wait()
                    if poster.wake.is_set():
                        poster.wake = trio.Event()
                    continue
                now = trio.current_time()
                due: list[_Item] = []
                while heap and heap[0][0] <= now:
                    due.append(heapq.heappop(heap))
                for phone_number_id, items in self._groups(due):
                    body = self._body(phone_number_id, items)
                    await self._post(connection, body, phone_number_id, [i[2] for i in items])
                    self.state.webhook_pending -= len(items)
        finally:
            await connection.aclose()

    def _groups(self, due: list[_Item]) -> list[tuple[str, list[_Item]]]:
        """Due items as requests: one each, or up to `webhook_batch` of one number."""
        limit = max(1, self.config.webhook_batch)
        if limit == 1:
            return [(item[3], [item]) for item in due]
        by_phone: dict[str, list[_Item]] = {}
        for item in due:
            by_phone.setdefault(item[3], []).append(item)
        return [
            (phone, items[start : start + limit])
            for phone, items in by_phone.items()
            for start in range(0, len(items), limit)
        ]

    def _body(self, phone_number_id: str, items: list[_Item]) -> bytes:
        stamp = int(time.time())
        display = self.display_of(phone_number_id)
        statuses: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        for _due, _seq, kind, _phone, wamid, to, callback, detail in items:
            if kind == "reply":
                self._replies += 1
                messages.append(
                    notifications.reply(
                        wamid=wamid,
                        to=to,
                        display_phone_number=display,
                        stamp=stamp,
                        n=self._replies,
                    )
                )
            elif kind == "failed":
                statuses.append(
                    notifications.failed_status(
                        wamid=wamid, to=to, callback=callback, code=detail, stamp=stamp
                    )
                )
            else:
                statuses.append(
                    notifications.status(
                        kind,
                        wamid=wamid,
                        to=to,
                        callback=callback,
                        template=bool(detail),
                        stamp=stamp,
                        phone_number_id=phone_number_id,
                    )
                )
        return notifications.messages_body(
            waba_id=self.config.waba_id,
            display_phone_number=display,
            phone_number_id=phone_number_id,
            statuses=statuses,
            messages=messages,
            stamp=stamp,
        )

    def _signature(self, body: bytes) -> bytes:
        return sign(self.config.app_secret, body).encode()

    async def _post(
        self, connection: PostConnection, body: bytes, phone_number_id: str, kinds: list[str]
    ) -> None:
        signature = self._signature(body)
        problem = ""
        for delay in (*_RETRY_DELAYS, None):
            at = time.time()
            try:
                status = await connection.post(body, signature)
            except PostError as exc:
                problem = str(exc)
            else:
                if 200 <= status < 300:
                    self.state.posted(phone_number_id, kinds, at)
                    return
                problem = f"HTTP {status}"
            if delay is None:
                break
            log.debug("webhook POST to %s failed: %s; retrying", self.url, problem)
            await trio.sleep(delay)
        self.state.webhook_failures += 1
        log.warning("webhook POST to %s dropped after retries: %s", self.url, problem)

    async def post_now(self, body: bytes) -> int:
        """Post one signal (template, quality, account) at once, for the control endpoint;
        the receiver's HTTP status. Raises PostError when it cannot be reached."""
        async with self._control_lock:
            status = await self._control.post(body, self._signature(body))
        if 200 <= status < 300:
            self.state.webhook_posts += 1
            self.state.webhook_items += 1
        return status

    async def aclose(self) -> None:
        await self._control.aclose()
