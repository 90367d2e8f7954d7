"""The Cloud API simulator over real loopback sockets: Meta-shaped signed webhooks (one
status per request by default, in order per message), forced errors and the messaging
limit, the control endpoints, the record of what it accepted, and the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h11
import pytest
import trio

from engine.core.webhook_payload import sign
from engine.tools.simulator import SimulatorConfig, SimulatorHandle, parse_args, serve_simulator
from engine.tools.simulator.limits import DAY_SECONDS, ThroughputWindow, UniqueUsersWindow
from engine.tools.simulator.post_connection import PostConnection
from engine.transport.http1 import HTTPConnection, Response, split_url

SECRET = "app-secret"
AUTH = [(b"authorization", b"Bearer t")]


class WebhookReceiver:
    """Accepts webhook POSTs, keeping (signature header, raw body, parsed body) in arrival
    order. While `hold` is unset the first request waits for its answer."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes | None, bytes, dict[str, Any]]] = []
        self.hold: trio.Event | None = None
        self._changed = trio.Event()

    @property
    def items(self) -> list[tuple[str, dict[str, Any]]]:
        """(phone_number_id, status or inbound message) in arrival order."""
        found = []
        for _sig, _body, payload in self.posts:
            value = payload["entry"][0]["changes"][0]["value"]
            phone = value.get("metadata", {}).get("phone_number_id", "")
            found += [(phone, s) for s in value.get("statuses", [])]
            found += [(phone, m) for m in value.get("messages", [])]
        return found

    async def wait_posts(self, count: int) -> None:
        while len(self.posts) < count:
            await self._changed.wait()

    async def wait_items(self, count: int) -> None:
        while len(self.items) < count:
            await self._changed.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                signature, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        signature = dict(event.headers).get(b"x-hub-signature-256")
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                self.posts.append((signature, body, json.loads(body)))
                self._changed.set()
                self._changed = trio.Event()
                if self.hold is not None:
                    await self.hold.wait()
                out = conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
                out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
                await stream.send_all(out)
                conn.start_next_cycle()


class Client:
    """Raw requests to the simulator: the test decides every byte of the send body."""

    def __init__(self, handle: SimulatorHandle) -> None:
        origin, self.base = split_url(handle.api_url)
        self.connection = HTTPConnection(origin)

    async def send(
        self,
        phone_number_id: str,
        to: str,
        callback: str | None = None,
        kind: str = "text",
    ) -> Response:
        body: dict[str, Any] = {"messaging_product": "whatsapp", "to": to, "type": kind}
        if kind == "template":
            body["template"] = {"name": "welcome", "language": {"code": "en"}}
        else:
            body["text"] = {"body": "hi"}
        if callback is not None:
            body["biz_opaque_callback_data"] = callback
        path = f"{self.base}/{phone_number_id}/messages"
        return await self.connection.request("POST", path, AUTH, json.dumps(body).encode())

    async def get(self, target: str) -> Any:
        response = await self.connection.request("GET", target, [])
        assert response.status == 200, response.body
        return json.loads(response.body)

    async def post(self, target: str, document: Any) -> tuple[int, Any]:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        response = await self.connection.request("POST", target, [], body)
        return response.status, json.loads(response.body)


@asynccontextmanager
async def simulator(
    receiver: WebhookReceiver | None = None, **config: Any
) -> AsyncIterator[tuple[SimulatorHandle, Client]]:
    async with trio.open_nursery() as nursery:
        if receiver is not None:
            listeners = await nursery.start(trio.serve_tcp, receiver.handle, 0)
            port = listeners[0].socket.getsockname()[1]
            config.setdefault("webhook_url", f"http://127.0.0.1:{port}/webhooks/whatsapp")
            config.setdefault("app_secret", SECRET)
        handle: SimulatorHandle = await nursery.start(serve_simulator, SimulatorConfig(**config))
        client = Client(handle)
        try:
            yield handle, client
        finally:
            await client.connection.aclose()
            nursery.cancel_scope.cancel()


def _wamid(response: Response) -> str:
    assert response.status == 200, response.body
    wamid: str = json.loads(response.body)["messages"][0]["id"]
    return wamid


def _error(response: Response) -> tuple[int, int]:
    document = json.loads(response.body)["error"]
    assert set(document) == {"message", "type", "code", "error_data", "fbtrace_id"}
    assert document["error_data"]["messaging_product"] == "whatsapp"
    assert document["error_data"]["details"]
    return response.status, document["code"]


# -- webhooks ----------------------------------------------------------------------------


async def test_one_status_per_request_in_meta_shape_signed_over_the_exact_bytes() -> None:
    receiver = WebhookReceiver()
    with trio.fail_after(15):
        async with simulator(
            receiver, read_share=1.0, reply_share=1.0, delivered_ms=5, read_ms=10, reply_ms=15,
            display_phone_number="15551234567", waba_id="waba-1",
        ) as (_handle, client):  # fmt: skip
            text = _wamid(await client.send("1001", "+15550001111", callback="ref.ab/c\u00e9 1"))
            template = _wamid(await client.send("2002", "+15550002222", kind="template"))
            await receiver.wait_items(8)

    assert len(receiver.posts) == 8  # 2 messages x (sent, delivered, read, reply)
    for signature, body, payload in receiver.posts:
        assert signature == sign(SECRET, body).encode()
        assert payload["object"] == "whatsapp_business_account"
        [entry] = payload["entry"]
        assert entry["id"] == "waba-1"
        [change] = entry["changes"]
        assert change["field"] == "messages"
        value = change["value"]
        assert value["messaging_product"] == "whatsapp"
        assert value["metadata"]["display_phone_number"] == "15551234567"
        assert len(value.get("statuses", [])) + len(value.get("messages", [])) == 1

    statuses = {(s["id"], s["status"]): (p, s) for p, s in receiver.items if "status" in s}
    assert set(statuses) == {
        (w, k) for w in (text, template) for k in ("sent", "delivered", "read")
    }
    for (wamid, _kind), (phone, status) in statuses.items():
        assert phone == ("1001" if wamid == text else "2002")
        assert int(status["timestamp"]) > 0
        assert status["recipient_id"] == ("15550001111" if wamid == text else "15550002222")
        assert set(status["conversation"]) == {"id", "expiration_timestamp", "origin"}
        assert set(status["pricing"]) == {"billable", "pricing_model", "category", "type"}
        if wamid == text:
            assert status["biz_opaque_callback_data"] == "ref.ab/c\u00e9 1"  # echoed exactly
            assert status["pricing"]["category"] == "service"
        else:
            assert "biz_opaque_callback_data" not in status  # the send carried none
            assert status["pricing"] == {"billable": True, "pricing_model": "PMP",
                                         "category": "marketing", "type": "regular"}  # fmt: skip
    replies = [m for _p, m in receiver.items if "from" in m]
    assert sorted(m["context"]["id"] for m in replies) == sorted([text, template])
    assert all(m["type"] == "text" and m["text"]["body"] for m in replies)


async def test_webhook_batch_groups_the_statuses_due_together_for_one_number() -> None:
    receiver = WebhookReceiver()
    receiver.hold = trio.Event()
    with trio.fail_after(15):
        async with simulator(
            receiver, webhook_batch=3, webhook_posters=1, read_share=0.0, reply_share=0.0,
            sent_ms=0, delivered_ms=0,
        ) as (handle, client):  # fmt: skip
            _wamid(await client.send("1001", "+15550000111", callback="0"))
            await receiver.wait_posts(1)  # held: its answer waits
            for i in range(1, 4):
                _wamid(await client.send("1001", f"+1555000{i}111", callback=str(i)))
            receiver.hold.set()
            await receiver.wait_items(8)

    sizes = [len(p["entry"][0]["changes"][0]["value"]["statuses"]) for _s, _b, p in receiver.posts]
    assert sizes == [2, 3, 3]
    assert [s["status"] for _p, s in receiver.items] == ["sent", "delivered"] * 4
    assert handle.state.statistics().webhook_items == 8
    assert handle.state.statistics().webhook_posts == 3


async def test_a_stuck_webhook_receiver_never_holds_up_the_send_endpoint() -> None:
    receiver = WebhookReceiver()
    receiver.hold = trio.Event()  # never set: the first webhook request waits for ever
    with trio.fail_after(15):
        async with simulator(receiver, webhook_posters=2, mps=0) as (handle, client):
            answers = [await client.send("1001", f"+1555{i:04d}1") for i in range(200)]
            await receiver.wait_posts(2)
            pending = handle.state.statistics().webhook_pending
    assert [a.status for a in answers] == [200] * 200
    assert len(receiver.posts) == 2  # one per poster, each waiting for its answer
    assert pending > 400  # the rest is queued, not lost


async def test_each_messages_statuses_arrive_in_order_whatever_the_jitter() -> None:
    receiver = WebhookReceiver()
    with trio.fail_after(20):
        async with simulator(
            receiver, webhook_posters=4, read_share=1.0, reply_share=1.0, sent_ms=0,
            delivered_ms=1, read_ms=2, reply_ms=3, jitter_ms=20, seed=7,
        ) as (_handle, client):  # fmt: skip
            wamids = [
                _wamid(await client.send("1001", f"+1555{i:04d}1", str(i))) for i in range(40)
            ]
            await receiver.wait_items(40 * 4)

    order: dict[str, list[str]] = {}
    for _phone, item in receiver.items:
        if "status" in item:
            order.setdefault(item["id"], []).append(item["status"])
        else:
            order.setdefault(item["context"]["id"], []).append("reply")
    assert order == {w: ["sent", "delivered", "read", "reply"] for w in wamids}


async def test_forced_failure_via_webhook_accepts_then_posts_a_failed_status() -> None:
    receiver = WebhookReceiver()
    with trio.fail_after(15):
        async with simulator(receiver) as (handle, client):
            status, _ = await client.post(
                "/simulator/numbers/1001", {"force": {"code": 131049, "via": "webhook", "times": 1}}
            )
            assert status == 200
            wamid = _wamid(await client.send("1001", "+15550001111", callback="c1"))
            await receiver.wait_items(1)
            accepted = await client.get("/simulator/accepted")

    [(_phone, failed)] = receiver.items
    assert (failed["id"], failed["status"], failed["biz_opaque_callback_data"]) == (
        wamid, "failed", "c1",
    )  # fmt: skip
    [error] = failed["errors"]
    assert error["code"] == 131049 and error["title"] and error["error_data"]["details"]
    assert accepted["failed_by_webhook"] == 1 and handle.state.accepted == 1


# -- answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http_status"),
    [(131049, 400), (131048, 400), (131047, 400), (368, 403), (131056, 400)],
)
async def test_a_forced_error_is_answered_the_configured_number_of_times(
    code: int, http_status: int
) -> None:
    with trio.fail_after(10):
        async with simulator() as (_handle, client):
            status, described = await client.post(
                "/simulator/numbers/1001", {"force": {"code": code, "times": 2}}
            )
            answers = [await client.send("1001", f"+1555000{i}111") for i in range(3)]
            other = await client.send("2002", "+15550009111")

    assert status == 200 and described["forced_left"] == 2
    assert [_error(a) for a in answers[:2]] == [(http_status, code)] * 2
    assert answers[2].status == 200 and other.status == 200


async def test_forced_share_applies_to_some_sends_and_null_clears_it() -> None:
    with trio.fail_after(10):
        async with simulator(seed=3) as (_handle, client):
            await client.post("/simulator/numbers/1001", {"force": {"code": 368, "share": 0.5}})
            shared = [(await client.send("1001", f"+1555{i:04d}1")).status for i in range(40)]
            await client.post("/simulator/numbers/1001", {"force": None})
            cleared = [(await client.send("1001", f"+1556{i:04d}1")).status for i in range(5)]
    assert 5 < shared.count(403) < 35 and shared.count(200) == 40 - shared.count(403)
    assert cleared == [200] * 5


async def test_131047_spares_templates_outside_the_service_window() -> None:
    with trio.fail_after(10):
        async with simulator() as (_handle, client):
            await client.post("/simulator/numbers/1001", {"force": {"code": 131047}})
            free_form = await client.send("1001", "+15550001111")
            template = await client.send("1001", "+15550001111", kind="template")
    assert _error(free_form) == (400, 131047)
    assert template.status == 200


async def test_throughput_beyond_mps_answers_130429_as_http_400_per_number() -> None:
    with trio.fail_after(10):
        async with simulator(mps=80, numbers={}) as (_handle, client):
            await client.post("/simulator/numbers/1001", {"mps": 2})
            answers = [await client.send("1001", f"+1555000{i}111") for i in range(3)]
            other = [await client.send("2002", f"+1555000{i}111") for i in range(3)]
    assert [a.status for a in answers[:2]] == [200, 200]
    assert _error(answers[2]) == (400, 130429)
    assert [a.status for a in other] == [200] * 3  # its own window, the default 80


async def test_messaging_limit_is_shared_by_the_numbers_of_a_portfolio() -> None:
    with trio.fail_after(10):
        async with simulator() as (_handle, client):
            await client.post("/simulator/numbers/1001", {"portfolio": "p1", "messagingLimit": 2})
            await client.post("/simulator/numbers/1002", {"portfolio": "p1"})
            first = [await client.send("1001", to) for to in ("+15550001111", "+15550002222")]
            again = await client.send("1002", "+15550001111")  # already reached: costs nothing
            beyond = await client.send("1002", "+15550003333")
            elsewhere = await client.send("2002", "+15550003333")  # another portfolio
            described = await client.get("/simulator/numbers/1002")
    assert [a.status for a in first] == [200, 200] and again.status == 200
    assert _error(beyond) == (400, 131048)
    assert "messaging limit of 2" in json.loads(beyond.body)["error"]["error_data"]["details"]
    assert elsewhere.status == 200
    assert described["messaging_limit"] == 2 and described["unique_users_24h"] == 2
    assert described["portfolio"] == "p1"


def test_unique_users_window_moves_with_time() -> None:
    window = UniqueUsersWindow()
    assert window.admit("a", 0.0, 2) and window.admit("b", 10.0, 2)
    assert not window.admit("c", 20.0, 2)
    assert window.admit("a", 30.0, 2)  # in the window: counted once, now as of 30
    assert window.used(30.0) == 2 and window.next_opening(30.0) == 10.0 + DAY_SECONDS
    assert not window.admit("c", DAY_SECONDS + 5.0, 2)  # b (10) is still within 24 h
    assert window.admit("c", DAY_SECONDS + 10.0, 2)  # b left; a (30) has not
    assert window.used(DAY_SECONDS + 10.0) == 2
    assert window.used(DAY_SECONDS + 30.0) == 1 and window.used(2 * DAY_SECONDS + 10.0) == 0


def test_throughput_window_counts_the_last_second() -> None:
    window = ThroughputWindow()
    assert [window.admit(t, 2) for t in (0.0, 0.1, 0.5)] == [True, True, False]
    assert window.admit(1.0, 2) and not window.admit(1.05, 2) and window.admit(1.1, 2)


async def test_invalid_bodies_are_rejected_with_code_100() -> None:
    with trio.fail_after(10):
        async with simulator() as (handle, client):
            answers = []
            for body in (
                b"not json",
                b'{"messaging_product":"whatsapp","to":"+1555","type":"text"}',  # no text object
                b'{"messaging_product":"sms","to":"+1555","type":"text","text":{"body":"x"}}',
                b'{"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}',
            ):
                path = f"{client.base}/1001/messages"
                response = await client.connection.request("POST", path, AUTH, body)
                answers.append(_error(response))
            unversioned = await client.connection.request(
                "POST",
                "/1001/messages",
                AUTH,
                b'{"messaging_product":"whatsapp","to":"+1555","type":"text","text":{"body":"x"}}',
            )
            no_token = await client.connection.request(
                "POST", "/1001/messages", [], b'{"messaging_product":"whatsapp"}'
            )
    assert answers == [(400, 100)] * 4
    assert unversioned.status == 200
    assert _error(no_token) == (401, 190)
    assert handle.state.statistics().rejected_by_code == {"100": 4, "190": 1}


# -- control endpoints -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        ({"messagingLimit": 0}, "$.messagingLimit"),
        ({"force": {"code": 999}}, "$.force.code"),
        ({"force": {"code": 368, "share": 1.5}}, "$.force.share"),
        ({"force": {"code": 368, "times": 0}}, "$.force.times"),
        ({"mps": -1}, "$.mps"),
        ({"limit": 5}, "$.limit"),  # unknown field
    ],
)
async def test_bad_number_behaviour_answers_400_naming_the_field(
    body: Any, field: str | None
) -> None:
    with trio.fail_after(10):
        async with simulator() as (_handle, client):
            status, document = await client.post("/simulator/numbers/1001", body)
            described = await client.get("/simulator/numbers/1001")
    assert status == 400 and document["error"]["message"]
    assert document["error"].get("field") == field
    assert described["behaviour"]["force"] is None  # nothing half-applied
    assert described["messaging_limit"] is None


async def test_control_endpoints_post_signed_signals_in_meta_shapes() -> None:
    receiver = WebhookReceiver()
    with trio.fail_after(15):
        async with simulator(receiver, waba_id="waba-9") as (_handle, client):
            await client.post("/simulator/numbers/1001", {"displayPhoneNumber": "15557654321"})
            answers = [
                await client.post(
                    "/simulator/webhooks/template-status",
                    {
                        "name": "promo",
                        "language": "en_US",
                        "event": "PAUSED",
                        "reason": "LOW_QUALITY",
                    },
                ),
                await client.post(
                    "/simulator/webhooks/quality",
                    {"phone_number_id": "1001", "event": "DOWNGRADE", "current_limit": "TIER_250"},
                ),
                await client.post(
                    "/simulator/webhooks/account-update",
                    {
                        "phone_number_id": "1001",
                        "event": "ACCOUNT_RESTRICTION",
                        "restriction_info": [
                            {
                                "restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING",
                                "expiration": 1700000000,
                            }
                        ],
                    },
                ),
            ]
            bad = await client.post("/simulator/webhooks/quality", {"event": "DOWNGRADE"})

    assert [status for status, _ in answers] == [200, 200, 200]
    assert all(document["receiver_status"] == 200 for _, document in answers)
    assert bad[0] == 400 and bad[1]["error"]["field"] == "$.phone_number_id"
    changes = []
    for signature, body, payload in receiver.posts:
        assert signature == sign(SECRET, body).encode()
        assert payload["object"] == "whatsapp_business_account"
        [entry] = payload["entry"]
        assert entry["id"] == "waba-9" and int(entry["time"]) > 0
        [change] = entry["changes"]
        changes.append((change["field"], change["value"]))
    [template, quality, account] = changes
    assert template[0] == "message_template_status_update"
    assert template[1]["event"] == "PAUSED" and template[1]["reason"] == "LOW_QUALITY"
    assert template[1]["message_template_name"] == "promo"
    assert template[1]["message_template_language"] == "en_US"
    assert isinstance(template[1]["message_template_id"], int)
    assert quality == (
        "phone_number_quality_update",
        {"display_phone_number": "15557654321", "event": "DOWNGRADE", "current_limit": "TIER_250"},
    )
    assert account[0] == "account_update"
    assert account[1]["phone_number"] == "15557654321"
    assert account[1]["event"] == "ACCOUNT_RESTRICTION"
    assert account[1]["restriction_info"][0]["restriction_type"] == (
        "RESTRICTED_BIZ_INITIATED_MESSAGING"
    )


async def test_signal_endpoints_without_a_webhook_url_answer_409() -> None:
    with trio.fail_after(10):
        async with simulator() as (_handle, client):
            status, document = await client.post(
                "/simulator/webhooks/template-status",
                {"name": "promo", "language": "en", "event": "APPROVED"},
            )
    assert status == 409 and "webhook" in document["error"]["message"]


# -- the record ----------------------------------------------------------------------------


async def test_the_accepted_record_counts_every_send_exactly() -> None:
    with trio.fail_after(10):
        async with simulator() as (handle, client):
            sends = [("1001", "+15550001111", "5"), ("1001", "+15550001111", "5"),
                     ("1001", "+15550002222", "6"), ("2002", "+15550001111", "7"),
                     ("1001", "+15550000000", "8")]  # fmt: skip  # the last: 131026
            wamids = [await client.send(p, to, callback) for p, to, callback in sends]
            everything = await client.get("/simulator/accepted?counts=all&last=2")
            one = await client.get("/simulator/accepted?phone_number_id=1001&to=%2B15550001111")
            by_callback = await client.get("/simulator/sends?callback=5")
            stats = await client.get("/simulator/stats")

    assert everything["accepted"] == 4 and everything["rejected"] == 1
    assert everything["rejected_by_code"] == {"131026": 1}
    assert everything["by_phone"] == {
        "1001": {"accepted": 3, "recipients": 2, "sent_more_than_once": 1},
        "2002": {"accepted": 1, "recipients": 1, "sent_more_than_once": 0},
    }
    assert everything["sent_more_than_once"] == [
        {"phone_number_id": "1001", "to": "+15550001111", "count": 2}
    ]
    assert everything["counts"] == {
        "1001": {"+15550001111": 2, "+15550002222": 1},
        "2002": {"+15550001111": 1},
    }
    [third, fourth] = everything["last"]
    assert third == {
        "phone_number_id": "1001", "to": "+15550002222", "wamid": _wamid(wamids[2]),
        "biz_opaque_callback_data": "6", "at": third["at"],
    }  # fmt: skip
    assert fourth["wamid"] == _wamid(wamids[3]) and fourth["at"] >= third["at"] > 0
    assert one["to"] == {"to": "+15550001111", "counts": {"1001": 2}}
    assert one["accepted"] == 3 and len(one["last"]) == 3
    assert by_callback == {"callback": "5", "accepted": 2}
    assert (stats["accepted"], stats["rejected"], stats["duplicates"]) == (4, 1, 1)
    assert handle.state.sends_for("5") == 2


async def test_timelines_note_every_nth_send_and_status() -> None:
    receiver = WebhookReceiver()
    with trio.fail_after(15):
        async with simulator(receiver, timeline_every=2, read_share=0.0, reply_share=0.0,
                             delivered_ms=0) as (_handle, client):  # fmt: skip
            for i in range(5):
                _wamid(await client.send("1001", f"+1555000{i}111"))
            await receiver.wait_items(10)
            accepted = await client.get("/simulator/timeline?phone_number_id=1001&kind=accepted")
            delivered = await client.get("/simulator/timeline?phone_number_id=1001&kind=delivered")
    assert accepted["count"] == 5 and [n for n, _at in accepted["points"]] == [2, 4]
    assert delivered["count"] == 5 and [n for n, _at in delivered["points"]] == [2, 4]
    assert all(at > 0 for _n, at in delivered["points"])


# -- the program ---------------------------------------------------------------------------


def test_parse_args_reads_number_behaviour_and_refuses_bad_json() -> None:
    config = parse_args(
        ["--webhook-batch", "5", "--number", '1001={"messagingLimit": 250, "portfolio": "p"}',
         "--number", '2002={"force": {"code": 131048, "share": 0.5, "times": 3}}']
    )  # fmt: skip
    assert config.webhook_batch == 5
    assert config.numbers["1001"].messaging_limit == 250
    force = config.numbers["2002"].force
    assert force is not None and (force.code, force.share, force.times) == (131048, 0.5, 3)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--number", '1001={"messagingLimit": -1}'])
    assert exited.value.code == 2


async def test_cli_prints_its_address_and_exits_0_on_sigterm() -> None:
    code = "import sys; from engine.tools.simulator import main; sys.exit(main(sys.argv[1:]))"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            command = [sys.executable, "-c", code, "--port", "0", "--latency-ms", "0",
                       "--number", '1001={"force": {"code": 368, "times": 1}}']  # fmt: skip
            process = await nursery.start(
                partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
            )
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "simulator exited before printing its address"
                line += chunk
            assert line.startswith(b"simulator listening on http://127.0.0.1:")
            url = line.split()[-1].decode()
            origin, _ = split_url(url)
            connection = HTTPConnection(origin)
            body = (
                b'{"messaging_product":"whatsapp","to":"+1555","type":"text","text":{"body":"x"}}'
            )
            first = await connection.request("POST", "/v21.0/1001/messages", AUTH, body)
            second = await connection.request("POST", "/v21.0/1001/messages", AUTH, body)
            await connection.aclose()
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert (first.status, second.status) == (403, 200)


async def test_post_connection_reads_every_kind_of_answer_and_reconnects() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=1\r\nabc\r\n0\r\nA: b\r\n\r\n",
        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nbody until the end",  # no length: read to EOF
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    requests: list[bytes] = []

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            while answers:
                while b"\r\n\r\n" not in buffer or not buffer.endswith(b"}"):
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                requests.append(buffer)
                buffer = b""
                answer = answers.pop(0)
                await stream.send_all(answer)
                if b"Connection: close" in answer or b"body until" in answer:
                    return

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, serve, 0)
            port = listeners[0].socket.getsockname()[1]
            origin, target = split_url(f"http://127.0.0.1:{port}/hook")
            connection = PostConnection(origin, target)
            statuses = [await connection.post(b'{"n":%d}' % i, b"sha256=00") for i in range(5)]
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert statuses == [200, 202, 503, 200, 204]
    assert connection.connections_opened == 3  # after the close, and after the EOF body
    assert requests[0].startswith(b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b'\r\nContent-Length: 7\r\nX-Hub-Signature-256: sha256=00\r\n\r\n{"n":0}' in requests[0]
