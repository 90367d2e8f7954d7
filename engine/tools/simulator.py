"""A local stand-in for the WhatsApp Cloud API send endpoint and its status webhooks.

trio + h11, cheap per request so it is never the bottleneck of a benchmark.

- `POST [/{version}]/{phone_number_id}/messages`: Bearer token required (else 401,
  code 190); body checked (else 400, code 100); more than `mps` accepted sends per
  phone number id in the last second: 429, code 130429; a `to` ending in `0000`:
  400, code 131026; a `failure_rate` share: 500, code 131000; otherwise a wamid
  after `latency_ms`.
- `GET /simulator/stats`: totals and `duplicates` (callback ids accepted more than once).
- `GET /simulator/sends?callback=ID`: `{"callback": ID, "accepted": N}`.
- `GET /simulator/last?phone_number_id=ID`: `{"phone_number_id", "accepted", "last_accepted_at"}`
  (sends accepted for that id, and the wall-clock time of the last one, or null).
- With `webhook_url`: statuses `sent`, `delivered`, `read` (a share) and inbound
  replies (a share, with `context.id`), posted in batches, signed with `app_secret`.

In process: `handle = await nursery.start(serve_simulator, config)`, then read
`handle.state`. As a program: `main(argv)`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import random
import secrets
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import h11
import msgspec
import trio

from engine.transport.http1 import Header, HTTPConnection, HTTPError, split_url

log = logging.getLogger(__name__)


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    latency_ms: float = 0.0
    failure_rate: float = 0.0
    mps: int = 80  # per phone number id, sliding one-second window; 0: unlimited
    seed: int | None = None
    webhook_url: str | None = None
    app_secret: str = ""
    delivered_ms: float = 50.0
    read_ms: float = 100.0
    read_share: float = 0.5
    reply_ms: float = 150.0
    reply_share: float = 0.1
    flush_ms: float = 100.0
    flush_max_items: int = 200
    webhook_posters: int = 4
    display_phone_number: str = "15550000000"
    waba_id: str = "WABA"
    keep_requests: int = 100_000  # newest requests kept in SimulatorState.requests


class RecordedRequest(msgspec.Struct, frozen=True):
    """One send request as the simulator saw it, accepted or not."""

    phone_number_id: str
    http_status: int
    error_code: int | None
    wamid: str | None
    body: bytes  # raw request body
    callback: str | None
    to: str | None


class SimulatorStats(msgspec.Struct, frozen=True):
    requests: int
    accepted: int
    rejected: int
    rejected_by_code: dict[str, int]
    duplicates: int
    webhook_posts: int
    webhook_failures: int
    webhook_items: int


class SimulatorState:
    """What the simulator saw. Mutated only by the simulator's tasks (one trio thread)."""

    def __init__(self, keep_requests: int) -> None:
        self.requests: deque[RecordedRequest] = deque(maxlen=keep_requests)
        self.accepted = 0
        self.rejected_by_code: Counter[int] = Counter()
        self.accepted_by_callback: Counter[str] = Counter()
        self.duplicates = 0
        self.webhook_posts = 0
        self.webhook_failures = 0
        self.webhook_items = 0
        # phone_number_id -> (accepted sends, time.time() of the last one)
        self.last_accept: dict[str, tuple[int, float]] = {}

    def sends_for(self, callback: str) -> int:
        """Accepted sends carrying this `biz_opaque_callback_data`."""
        return self.accepted_by_callback[callback]

    def record(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        if request.error_code is None:
            self.accepted += 1
            count, _ = self.last_accept.get(request.phone_number_id, (0, 0.0))
            self.last_accept[request.phone_number_id] = (count + 1, time.time())
            if request.callback is not None:
                count = self.accepted_by_callback[request.callback] + 1
                self.accepted_by_callback[request.callback] = count
                if count == 2:
                    self.duplicates += 1
        else:
            self.rejected_by_code[request.error_code] += 1

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
        )


class SimulatorHandle(msgspec.Struct, frozen=True):
    host: str
    port: int
    state: SimulatorState

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What to configure as an account's `api_url`."""
        return f"{self.url}/v21.0"


# -- wire formats ----------------------------------------------------------------------

_MESSAGE_TYPES = frozenset(
    {"text", "template", "image", "document", "audio", "video", "sticker", "location",
     "contacts", "interactive", "reaction"}
)  # fmt: skip


_ABSENT = msgspec.Raw()  # msgspec cannot decode `Raw | None`; empty Raw means absent


class _SendBody(msgspec.Struct):
    messaging_product: str | None = None
    to: str | None = None
    type: str | None = None
    biz_opaque_callback_data: str | None = None
    text: msgspec.Raw = _ABSENT
    template: msgspec.Raw = _ABSENT
    image: msgspec.Raw = _ABSENT
    document: msgspec.Raw = _ABSENT
    audio: msgspec.Raw = _ABSENT
    video: msgspec.Raw = _ABSENT
    sticker: msgspec.Raw = _ABSENT
    location: msgspec.Raw = _ABSENT
    contacts: msgspec.Raw = _ABSENT
    interactive: msgspec.Raw = _ABSENT
    reaction: msgspec.Raw = _ABSENT


_decode_send = msgspec.json.Decoder(_SendBody).decode
_encode = msgspec.json.Encoder().encode


def _graph_error(code: int, message: str, details: str, kind: str = "OAuthException") -> bytes:
    return _encode(
        {
            "error": {
                "message": message,
                "type": kind,
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": "SIMULATOR",
            }
        }
    )


_ERROR_BODIES: dict[int, tuple[int, bytes]] = {
    190: (401, _graph_error(190, "Invalid OAuth access token.", "Missing bearer token")),
    100: (400, _graph_error(100, "Invalid parameter", "Invalid request body")),
    130429: (
        429,
        _graph_error(130429, "Rate limit hit", "Cloud API message throughput has been reached."),
    ),
    131026: (
        400,
        _graph_error(131026, "Message undeliverable", "Message Undeliverable.", "OAuthException"),
    ),
    131000: (500, _graph_error(131000, "Something went wrong", "Something went wrong")),
}
_NOT_FOUND = _encode(
    {"error": {"message": "Unknown path", "code": 100, "type": "GraphMethodException"}}
)
_JSON: Header = (b"content-type", b"application/json")


def _success_body(to: str, wamid: str) -> bytes:
    return b"".join(
        (
            b'{"messaging_product":"whatsapp","contacts":[{"input":',
            _encode(to),
            b',"wa_id":',
            _encode(to.lstrip("+")),
            b'}],"messages":[{"id":"',
            wamid.encode(),
            b'"}]}',
        )
    )


# -- the send endpoint ---------------------------------------------------------------


class _Sender:
    """Decides the answer to each send; owns the state, rate windows and randomness."""

    def __init__(self, config: SimulatorConfig, state: SimulatorState, webhooks: _Webhooks | None):
        self.config = config
        self.state = state
        self.webhooks = webhooks
        self.random = random.Random(config.seed)
        self.windows: dict[str, deque[float]] = {}
        self.prefix = f"wamid.sim{secrets.token_hex(4)}."
        self.count = 0

    def answer(self, phone_number_id: str, authorized: bool, body: bytes) -> tuple[int, bytes]:
        callback = to = None
        code: int | None
        if not authorized:
            code = 190
        else:
            try:
                parsed = _decode_send(body)
            except msgspec.DecodeError:
                parsed = None
            if parsed is not None:
                callback, to = parsed.biz_opaque_callback_data, parsed.to
            code = self._check(phone_number_id, parsed)
        if code is not None:
            status, answer = _ERROR_BODIES[code]
            self.state.record(
                RecordedRequest(phone_number_id, status, code, None, body, callback, to)
            )
            return status, answer
        assert to is not None
        self.count += 1
        wamid = f"{self.prefix}{self.count}"
        self.state.record(RecordedRequest(phone_number_id, 200, None, wamid, body, callback, to))
        if self.webhooks is not None:
            self.webhooks.schedule(phone_number_id, wamid, to, callback)
        return 200, _success_body(to, wamid)

    def _check(self, phone_number_id: str, body: _SendBody | None) -> int | None:
        if (
            body is None
            or body.messaging_product != "whatsapp"
            or not body.to
            or body.type not in _MESSAGE_TYPES
            or not getattr(body, body.type)
        ):
            return 100
        if self.config.mps > 0:
            now = trio.current_time()
            window = self.windows.get(phone_number_id)
            if window is None:
                window = self.windows[phone_number_id] = deque()
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self.config.mps:
                return 130429
            window.append(now)
        if body.to.endswith("0000"):
            return 131026
        if self.config.failure_rate > 0 and self.random.random() < self.config.failure_rate:
            return 131000
        return None


def _phone_number_id(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 3 and parts[-1] == "messages" and parts[-2]:
        return parts[-2]
    return None


async def _serve_connection(stream: trio.SocketStream, sender: _Sender) -> None:
    conn = h11.Connection(h11.SERVER)
    latency = sender.config.latency_ms / 1000
    try:
        while True:
            request: h11.Request | None = None
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif type(event) is h11.Request:
                    request = event
                elif type(event) is h11.Data:
                    chunks.append(event.data)
                elif type(event) is h11.EndOfMessage:
                    break
                elif type(event) is h11.ConnectionClosed or event is h11.PAUSED:
                    return
            assert request is not None
            status, body, content_type = _route(request, b"".join(chunks), sender)
            if latency and status != 404:
                await trio.sleep(latency)
            headers = [content_type, (b"content-length", b"%d" % len(body))]
            data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            data += conn.send(h11.Data(data=body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(data)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


def _route(request: h11.Request, body: bytes, sender: _Sender) -> tuple[int, bytes, Header]:
    target = request.target.decode("ascii", "replace")
    path, _, query = target.partition("?")
    if request.method == b"POST":
        phone_number_id = _phone_number_id(path)
        if phone_number_id is not None:
            authorized = any(
                name == b"authorization" and value[:7].lower() == b"bearer " and value[7:].strip()
                for name, value in request.headers
            )
            status, answer = sender.answer(phone_number_id, authorized, body)
            return status, answer, _JSON
    elif request.method == b"GET":
        if path == "/simulator/stats":
            return 200, _encode(sender.state.statistics()), _JSON
        if path == "/simulator/sends":
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            callback = params.get("callback", "")
            accepted = sender.state.sends_for(callback)
            return 200, _encode({"callback": callback, "accepted": accepted}), _JSON
        if path == "/simulator/last":
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            phone = params.get("phone_number_id", "")
            count, at = sender.state.last_accept.get(phone, (0, None))
            document = {"phone_number_id": phone, "accepted": count, "last_accepted_at": at}
            return 200, _encode(document), _JSON
    return 404, _NOT_FOUND, _JSON


# -- status webhooks -----------------------------------------------------------------


class _Webhooks:
    """Schedules statuses and replies; a flusher batches due items into signed POSTs.

    Each kind has a fixed delay, so each queue is already ordered by due time.
    """

    def __init__(self, config: SimulatorConfig, state: SimulatorState) -> None:
        assert config.webhook_url is not None
        self.config = config
        self.state = state
        self.url = config.webhook_url
        self.random = random.Random(None if config.seed is None else config.seed + 1)
        self.secret = config.app_secret.encode()
        # kind -> (delay seconds, queue of (due, phone_number_id, wamid, to, callback))
        self.queues: dict[str, tuple[float, deque[tuple[float, str, str, str, str | None]]]] = {
            "sent": (0.0, deque()),
            "delivered": (config.delivered_ms / 1000, deque()),
            "read": (config.read_ms / 1000, deque()),
            "reply": (config.reply_ms / 1000, deque()),
        }
        self.replies = 0

    def schedule(self, phone_number_id: str, wamid: str, to: str, callback: str | None) -> None:
        if to.endswith("0000"):
            return
        now = trio.current_time()
        item = (phone_number_id, wamid, to, callback)
        for kind in ("sent", "delivered"):
            delay, queue = self.queues[kind]
            queue.append((now + delay, *item))
        for kind, share in (("read", self.config.read_share), ("reply", self.config.reply_share)):
            if share > 0 and self.random.random() < share:
                delay, queue = self.queues[kind]
                queue.append((now + delay, *item))

    def take_due(self, now: float) -> dict[str, tuple[list[Any], list[Any]]]:
        """Due items, as (statuses, messages) per phone number id, in webhook shape."""
        by_phone: dict[str, tuple[list[Any], list[Any]]] = {}
        stamp = str(int(time.time()))
        for kind, (_delay, queue) in self.queues.items():
            while queue and queue[0][0] <= now:
                _due, phone_number_id, wamid, to, callback = queue.popleft()
                statuses, messages = by_phone.setdefault(phone_number_id, ([], []))
                wa_id = to.lstrip("+")
                if kind == "reply":
                    self.replies += 1
                    messages.append(
                        {
                            "from": wa_id,
                            "id": f"wamid.in.{wamid}.{self.replies}",
                            "timestamp": stamp,
                            "type": "text",
                            "text": {"body": "Thanks!"},
                            "context": {"from": self.config.display_phone_number, "id": wamid},
                        }
                    )
                else:
                    status: dict[str, Any] = {
                        "id": wamid,
                        "status": kind,
                        "timestamp": stamp,
                        "recipient_id": wa_id,
                    }
                    if callback is not None:
                        status["biz_opaque_callback_data"] = callback
                    statuses.append(status)
        return by_phone

    def batches(
        self, by_phone: dict[str, tuple[list[Any], list[Any]]]
    ) -> Iterator[tuple[bytes, int]]:
        """Webhook bodies of at most `flush_max_items` items, one phone number id each."""
        limit = max(1, self.config.flush_max_items)
        for phone_number_id, (statuses, messages) in by_phone.items():
            items: list[tuple[str, Any]] = [("statuses", s) for s in statuses]
            items += [("messages", m) for m in messages]
            for start in range(0, len(items), limit):
                value: dict[str, Any] = {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": self.config.display_phone_number,
                        "phone_number_id": phone_number_id,
                    },
                }
                for field, item in items[start : start + limit]:
                    value.setdefault(field, []).append(item)
                if "messages" in value:
                    value["contacts"] = [
                        {"profile": {"name": "Simulated"}, "wa_id": m["from"]}
                        for m in value["messages"]
                    ]
                body = _encode(
                    {
                        "object": "whatsapp_business_account",
                        "entry": [
                            {
                                "id": self.config.waba_id,
                                "changes": [{"field": "messages", "value": value}],
                            }
                        ],
                    }
                )
                yield body, len(items[start : start + limit])

    def sign(self, body: bytes) -> bytes:
        return b"sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest().encode()

    async def run_flusher(self, outbox: trio.MemorySendChannel[tuple[bytes, int]]) -> None:
        async with outbox:
            interval = self.config.flush_ms / 1000
            while True:  # until cancelled with the simulator
                await trio.sleep(interval)
                for batch in self.batches(self.take_due(trio.current_time())):
                    await outbox.send(batch)

    async def run_poster(self, inbox: trio.MemoryReceiveChannel[tuple[bytes, int]]) -> None:
        origin, target = split_url(self.url)
        connection = HTTPConnection(origin, connect_timeout=5.0, read_timeout=10.0)
        try:
            async with inbox:
                async for body, items in inbox:
                    await self._post(connection, target, body, items)
        finally:
            await connection.aclose()

    async def _post(self, connection: HTTPConnection, target: str, body: bytes, items: int) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"x-hub-signature-256", self.sign(body)),
        ]
        for attempt in (1, 2):  # one retry, then the batch is dropped
            try:
                response = await connection.request("POST", target, headers, body)
            except HTTPError as exc:
                problem = str(exc)
            else:
                if 200 <= response.status < 300:
                    self.state.webhook_posts += 1
                    self.state.webhook_items += items
                    return
                problem = f"HTTP {response.status}"
            log.warning("webhook POST to %s failed (attempt %d): %s", self.url, attempt, problem)
        self.state.webhook_failures += 1


# -- running ----------------------------------------------------------------------------


async def serve_simulator(
    config: SimulatorConfig,
    *,
    task_status: trio.TaskStatus[SimulatorHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started(handle)` once the port is bound."""
    state = SimulatorState(config.keep_requests)
    webhooks = _Webhooks(config, state) if config.webhook_url else None
    sender = _Sender(config, state, webhooks)
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, sender)

    async with trio.open_nursery() as nursery:
        if webhooks is not None:
            outbox, inbox = trio.open_memory_channel[tuple[bytes, int]](16)
            async with outbox, inbox:
                for _ in range(max(1, config.webhook_posters)):
                    nursery.start_soon(webhooks.run_poster, inbox.clone())
                nursery.start_soon(webhooks.run_flusher, outbox.clone())
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started(SimulatorHandle(config.host, port, state))


def parse_args(argv: list[str] | None) -> SimulatorConfig:
    parser = argparse.ArgumentParser(
        prog="campaign-engine simulator", description="Local stand-in for the WhatsApp Cloud API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--app-secret", default="")
    parser.add_argument("--mps", type=int, default=80, help="per phone number id; 0: unlimited")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--delivered-ms", type=float, default=50.0)
    parser.add_argument("--read-ms", type=float, default=100.0)
    parser.add_argument("--read-share", type=float, default=0.5)
    parser.add_argument("--reply-ms", type=float, default=150.0)
    parser.add_argument("--reply-share", type=float, default=0.1)
    parser.add_argument("--flush-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        failure_rate=args.failure_rate,
        webhook_url=args.webhook_url,
        app_secret=args.app_secret,
        mps=args.mps,
        seed=args.seed,
        delivered_ms=args.delivered_ms,
        read_ms=args.read_ms,
        read_share=args.read_share,
        reply_ms=args.reply_ms,
        reply_share=args.reply_share,
        flush_ms=args.flush_ms,
        keep_requests=10_000,
    )


async def _run_until_signalled(config: SimulatorConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle: SimulatorHandle = await nursery.start(serve_simulator, config)
            print(f"simulator listening on {handle.url}", flush=True)
            async for _signal in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    trio.run(_run_until_signalled, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
