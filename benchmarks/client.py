"""The driver's view of the daemon: its HTTP API (aiohttp), its Socket.IO stream
(python-socketio's AsyncClient) and the simulator's counters. Plain asyncio: this is a
separate client process, like any front end."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import aiohttp
import socketio
from prometheus_client.parser import text_string_to_metric_families

from api.auth import issue_token

FINAL = frozenset({"completed", "failed", "cancelled"})
EVENTS = (
    "campaign:started",
    "campaign:progress",
    "campaign:stats",
    "campaign:paused",
    "campaign:resumed",
    "campaign:completed",
    "campaign:failed",
    "campaign:cancelled",
)


class ApiError(Exception):
    pass


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str, jwt_secret: str, user: str) -> None:
        self.http = http
        self.url = url
        self.token = issue_token(jwt_secret, user, 24 * 3600)
        self._headers = {"Authorization": f"Bearer {self.token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(
            method, f"{self.url}/api/v1{path}", json=body, headers=self._headers
        ) as response:
            document = await response.json(content_type=None)
            if response.status >= 300:
                raise ApiError(f"{method} {path}: {response.status} {document.get('message')}")
            return document["data"]

    async def text(self, path: str) -> str:
        async with self.http.get(f"{self.url}{path}") as response:
            return await response.text()

    async def account(
        self, name: str, phone_number_id: str, api_url: str, messages_per_second: int = 1000
    ) -> str:
        """`messages_per_second` defaults to the API's maximum per account."""
        data = await self.call(
            "POST",
            "/accounts",
            {
                "name": name,
                "phoneNumberId": phone_number_id,
                "accessToken": "bench-token",
                "apiUrl": api_url,
                "messagesPerSecond": messages_per_second,
            },
        )
        return str(data["id"])

    async def import_contacts(self, contacts: Iterable[dict[str, Any]], chunk: int = 10_000) -> int:
        batch: list[dict[str, Any]] = []
        imported = 0
        for contact in contacts:
            batch.append(contact)
            if len(batch) == chunk:
                imported += await self._import(batch)
                batch = []
        if batch:
            imported += await self._import(batch)
        return imported

    async def _import(self, batch: list[dict[str, Any]]) -> int:
        for attempt in (1, 2, 3):  # an upsert: safe to repeat after a 5xx (a database restart)
            try:
                result = await self.call("POST", "/contacts", {"contacts": batch})
                break
            except ApiError as exc:
                if attempt == 3 or ": 5" not in str(exc):
                    raise
                await asyncio.sleep(2.0)
        if result["rejected"]:
            raise ApiError(f"contacts rejected: {result['rejected'][:3]}")
        return int(result["created"]) + int(result["updated"])

    async def campaign(self, account_id: str, name: str, tag: str, per_minute: float) -> str:
        data = await self.call(
            "POST",
            "/campaigns",
            {
                "accountId": account_id,
                "name": name,
                "messageType": "text",
                "messageContent": "Hello {{firstName}}, this is message {{lastName}}.",
                "audienceType": "tags",
                "audienceConfig": {"tags": [tag]},
                "scheduleType": "manual",
                "throttleConfig": {"messagesPerMinute": per_minute},
            },
        )
        return str(data["id"])

    async def get(self, campaign_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.call("GET", f"/campaigns/{campaign_id}")
        return data

    async def command(self, campaign_id: str, action: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.call("POST", f"/campaigns/{campaign_id}/{action}")
        return data

    async def campaigns(self, status: str) -> list[tuple[float, dict[str, Any]]]:
        """Every campaign in `status`, each with the time its page was answered."""
        found: list[tuple[float, dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            query = f"/campaigns?status={status}&limit=500"
            if cursor is not None:
                query += f"&cursor={cursor}"
            async with self.http.get(f"{self.url}/api/v1{query}", headers=self._headers) as resp:
                document = await resp.json(content_type=None)
                if resp.status >= 300:
                    raise ApiError(f"GET {query}: {resp.status} {document.get('message')}")
            at = time.time()
            found += [(at, campaign) for campaign in document["data"]]
            cursor = (document.get("pagination") or {}).get("next_cursor")
            if not cursor:
                return found


class EventLog:
    """Every campaign event received, with the time it arrived, and waiters on them."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=True)
        self.events: dict[str, list[tuple[float, str, dict[str, Any]]]] = defaultdict(list)
        self._changed = asyncio.Condition()
        for name in EVENTS:
            self.client.on(name, self._handler(name))

    def _handler(self, name: str) -> Any:
        async def handle(payload: dict[str, Any]) -> None:
            self.events[payload.get("campaignId", "")].append((time.time(), name, payload))
            async with self._changed:
                self._changed.notify_all()

        return handle

    async def connect(self, url: str, token: str) -> None:
        await self.client.connect(url, auth={"token": token}, wait_timeout=10)

    async def close(self) -> None:
        await self.client.disconnect()

    def seen(self, campaign_id: str, names: Iterable[str]) -> tuple[float, str] | None:
        wanted = set(names)
        for at, name, _payload in self.events[campaign_id]:
            if name in wanted:
                return at, name
        return None

    def count(self, campaign_id: str, name: str) -> int:
        return sum(1 for _at, n, _p in self.events[campaign_id] if n == name)

    async def wait_for(
        self, campaign_id: str, names: Iterable[str], *, after: int = 0, within: float
    ) -> float:
        """Time of the first event in `names` beyond the first `after` events of the campaign."""
        wanted = set(names)

        def found() -> float | None:
            for at, name, _p in self.events[campaign_id][after:]:
                if name in wanted:
                    return at
            return None

        async with asyncio.timeout(within), self._changed:
            while (at := found()) is None:
                await self._changed.wait()
            return at


async def wait_final(api: Api, log: EventLog, ids: list[str], within: float) -> float:
    """Wait until every campaign is final; the time the last one finished (event time). The
    stream is the signal; a slow poll of the API covers an event lost to a reconnection."""
    finished: dict[str, float] = {}
    deadline = time.monotonic() + within
    while len(finished) < len(ids):
        for campaign_id in ids:
            if campaign_id in finished:
                continue
            hit = log.seen(campaign_id, ("campaign:completed", "campaign:failed",
                                         "campaign:cancelled"))  # fmt: skip
            if hit is not None:
                finished[campaign_id] = hit[0]
        if len(finished) == len(ids):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"campaigns not final after {within:.0f} s")
        pending = [i for i in ids if i not in finished]
        try:
            await log.wait_for(pending[0], ("campaign:completed", "campaign:failed",
                                            "campaign:cancelled"), within=2.0)  # fmt: skip
        except TimeoutError:
            for campaign_id in pending:
                if (await api.get(campaign_id))["status"] in FINAL:
                    finished[campaign_id] = time.time()
    return max(finished.values())


async def simulator_get(http: aiohttp.ClientSession, simulator_url: str, path: str) -> Any:
    """A `/simulator/...` document, e.g. `stats` or `timeline?phone_number_id=X&kind=read`."""
    async with http.get(f"{simulator_url}/simulator/{path}") as response:
        return await response.json()


async def simulator_last(
    http: aiohttp.ClientSession, simulator_url: str, phone_number_id: str
) -> tuple[int, float | None]:
    url = f"{simulator_url}/simulator/last?phone_number_id={phone_number_id}"
    async with http.get(url) as response:
        document = await response.json()
    return int(document["accepted"]), document["last_accepted_at"]


def counter(metrics_text: str, name: str) -> float:
    """A Prometheus counter's value (`name` without `_total`), summed over labels; 0 if absent."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total"
    )


def histogram(metrics_text: str, name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of a Prometheus histogram, summed over labels."""
    buckets: dict[float, float] = defaultdict(float)
    prefix = f"{name}_bucket{{"
    for line in metrics_text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, _, value = line.rpartition(" ")
        bound = labels.split('le="', 1)[1].split('"', 1)[0]
        buckets[math.inf if bound == "+Inf" else float(bound)] += float(value)
    return sorted(buckets.items())


def histogram_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float | None:
    """The q-quantile of the observations between two scrapes, interpolated linearly within
    its bucket (as Prometheus' histogram_quantile); None without observations."""
    earlier = dict(before)
    delta = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]
    if not delta or delta[-1][1] <= 0:
        return None
    rank = q * delta[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in delta:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            share = (rank - below) / inside if inside else 0.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
