"""What the simulator saw: every request's outcome, counted exactly per phone number id and
per recipient (`to`), the newest requests and accepted sends in full, and sampled timelines
of sends and posted statuses. Mutated only by the simulator's own tasks (one trio thread).

Memory is bounded by the number of distinct recipients (one counter each), never by the
number of requests: "nobody was sent twice" stays checkable after millions of sends.
"""

from __future__ import annotations

import time
from collections import Counter, deque

import msgspec

# What a posted webhook carried, for the timelines.
StatusKind = str  # "sent" | "delivered" | "read" | "failed" | "reply"


class RecordedRequest(msgspec.Struct, frozen=True):
    """One send request as the simulator saw it, accepted or not."""

    phone_number_id: str
    http_status: int
    error_code: int | None
    wamid: str | None
    body: bytes  # raw request body
    callback: str | None
    to: str | None


class AcceptedSend(msgspec.Struct, frozen=True):
    phone_number_id: str
    to: str
    wamid: str
    biz_opaque_callback_data: str | None
    at: float  # wall-clock seconds (time.time()) when the request was answered, before latency


class SimulatorStats(msgspec.Struct, frozen=True):
    requests: int
    accepted: int
    rejected: int
    rejected_by_code: dict[str, int]
    duplicates: int
    webhook_posts: int
    webhook_failures: int
    webhook_items: int
    webhook_dropped: int
    webhook_pending: int
    failed_by_webhook: int


class Timeline:
    """(count, wall-clock time) of every `every`-th event, the newest `keep` of them."""

    def __init__(self, every: int, keep: int = 100_000) -> None:
        self.every = max(1, every)
        self.count = 0
        self.points: deque[tuple[int, float]] = deque(maxlen=keep)

    def note(self, events: int = 1, at: float | None = None) -> None:
        before = self.count
        self.count += events
        if self.count // self.every > before // self.every:
            stamp = time.time() if at is None else at
            self.points.append((self.count - self.count % self.every, stamp))


class SimulatorState:
    def __init__(self, keep_requests: int, keep_accepted: int = 10_000, every: int = 10) -> None:
        self.requests: deque[RecordedRequest] = deque(maxlen=keep_requests)
        self.accepted_sends: deque[AcceptedSend] = deque(maxlen=keep_accepted)
        self.accepted = 0
        self.rejected_by_code: Counter[int] = Counter()
        self.accepted_by_callback: Counter[str] = Counter()
        self.duplicates = 0  # callbacks accepted more than once
        # phone_number_id -> to -> accepted sends
        self.to_counts: dict[str, Counter[str]] = {}
        # phone_number_id -> (accepted sends, time.time() of the last one)
        self.last_accept: dict[str, tuple[int, float]] = {}
        self.failed_by_webhook = 0
        self.webhook_posts = 0
        self.webhook_failures = 0
        self.webhook_items = 0
        self.webhook_dropped = 0
        self.webhook_pending = 0
        self._every = every
        self.timelines: dict[tuple[str, StatusKind], Timeline] = {}

    def sends_for(self, callback: str) -> int:
        """Accepted sends carrying this `biz_opaque_callback_data`."""
        return self.accepted_by_callback[callback]

    def record(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        if request.error_code is not None:
            self.rejected_by_code[request.error_code] += 1
            return
        assert request.to is not None and request.wamid is not None
        phone, to = request.phone_number_id, request.to
        now = time.time()
        self.accepted += 1
        count, _ = self.last_accept.get(phone, (0, 0.0))
        self.last_accept[phone] = (count + 1, now)
        counts = self.to_counts.get(phone)
        if counts is None:
            counts = self.to_counts[phone] = Counter()
        counts[to] += 1
        self.accepted_sends.append(AcceptedSend(phone, to, request.wamid, request.callback, now))
        self.timeline(phone, "accepted").note()
        if request.callback is not None:
            sends = self.accepted_by_callback[request.callback] + 1
            self.accepted_by_callback[request.callback] = sends
            if sends == 2:
                self.duplicates += 1

    def timeline(self, phone_number_id: str, kind: StatusKind) -> Timeline:
        key = (phone_number_id, kind)
        line = self.timelines.get(key)
        if line is None:
            line = self.timelines[key] = Timeline(self._every)
        return line

    def posted(self, phone_number_id: str, kinds: list[StatusKind], at: float) -> None:
        """A webhook request carrying these items, written at `at`, was answered 2xx."""
        self.webhook_posts += 1
        self.webhook_items += len(kinds)
        for kind in kinds:
            self.timeline(phone_number_id, kind).note(at=at)

    def statistics(self) -> SimulatorStats:
        rejected = sum(self.rejected_by_code.values())
        return SimulatorStats(
            requests=self.accepted + rejected,
            accepted=self.accepted,
            rejected=rejected,
            rejected_by_code={str(code): n for code, n in self.rejected_by_code.items()},
            duplicates=self.duplicates,
            webhook_posts=self.webhook_posts,
            webhook_failures=self.webhook_failures,
            webhook_items=self.webhook_items,
            webhook_dropped=self.webhook_dropped,
            webhook_pending=self.webhook_pending,
            failed_by_webhook=self.failed_by_webhook,
        )
