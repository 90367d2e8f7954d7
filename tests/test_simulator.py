"""The Cloud API simulator: signed, batched status webhooks; stats; the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
from functools import partial
from typing import Any

import h11
import trio

from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.tools.simulator import SimulatorConfig, SimulatorHandle, serve_simulator
from engine.transport.cloud_api import CloudApiGateway
from engine.transport.http1 import HTTPConnection, split_url

SECRET = "app-secret"


class _WebhookReceiver:
    """Accepts webhook POSTs, keeps (signature header, raw body), signals at `expect` items."""

    def __init__(self, expect: int) -> None:
        self.posts: list[tuple[bytes | None, bytes]] = []
        self.items = 0
        self.expect = expect
        self.done = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                signature, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        signature = dict(event.headers).get(b"x-hub-signature-256")
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                self.posts.append((signature, body))
                value = json.loads(body)["entry"][0]["changes"][0]["value"]
                self.items += len(value.get("statuses", [])) + len(value.get("messages", []))
                if self.items >= self.expect:
                    self.done.set()
                out = conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
                out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
                await stream.send_all(out)
                conn.start_next_cycle()


def _text(recipient_id: int, to: str) -> OutgoingMessage:
    return OutgoingMessage(recipient_id, to, "text", {"body": "hi"})


async def test_webhooks_are_signed_batched_and_complete() -> None:
    # 3 deliverable sends on two phone numbers, each: sent, delivered, read, one reply.
    receiver = _WebhookReceiver(expect=3 * 4)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, receiver.handle, 0)
            hook_port = listeners[0].socket.getsockname()[1]
            config = SimulatorConfig(
                webhook_url=f"http://127.0.0.1:{hook_port}/webhooks/whatsapp",
                app_secret=SECRET,
                delivered_ms=20,
                read_ms=40,
                reply_ms=60,
                read_share=1.0,
                reply_share=1.0,
                flush_ms=30,
                flush_max_items=3,
                seed=1,
            )
            handle: SimulatorHandle = await nursery.start(serve_simulator, config)
            results = {}
            async with CloudApiGateway().open_session() as session:
                for recipient_id, phone_number_id, to in [
                    (1, "1001", "+15550001111"),
                    (2, "1001", "+15550002222"),
                    (3, "2002", "+15550003333"),
                    (4, "1001", "+15550000000"),  # undeliverable: no statuses
                ]:
                    endpoint = AccountEndpoint("a", handle.api_url, phone_number_id, "t")
                    results[recipient_id] = await session.send(endpoint, _text(recipient_id, to))
            await receiver.done.wait()
            nursery.cancel_scope.cancel()

    assert [results[i].ok for i in (1, 2, 3, 4)] == [True, True, True, False]
    wamid_of = {str(i): results[i].provider_message_id for i in (1, 2, 3)}
    statuses: list[tuple[str, dict[str, Any]]] = []
    replies: list[tuple[str, dict[str, Any]]] = []
    for signature, body in receiver.posts:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert signature == expected.encode()
        payload = json.loads(body)
        assert payload["object"] == "whatsapp_business_account"
        [entry] = payload["entry"]
        [change] = entry["changes"]
        assert change["field"] == "messages"
        value = change["value"]
        assert value["messaging_product"] == "whatsapp"
        phone = value["metadata"]["phone_number_id"]
        batch = value.get("statuses", []) + value.get("messages", [])
        assert 1 <= len(batch) <= 3  # flush_max_items
        statuses += [(phone, s) for s in value.get("statuses", [])]
        replies += [(phone, m) for m in value.get("messages", [])]

    assert len(receiver.posts) < receiver.items  # batched, not one POST per item
    seen = {(s["biz_opaque_callback_data"], s["status"]) for _, s in statuses}
    assert seen == {(c, k) for c in ("1", "2", "3") for k in ("sent", "delivered", "read")}
    for phone, status in statuses:
        callback = status["biz_opaque_callback_data"]
        assert status["id"] == wamid_of[callback]
        assert phone == ("2002" if callback == "3" else "1001")
        assert int(status["timestamp"]) > 0
    assert sorted(m["context"]["id"] for _, m in replies) == sorted(map(str, wamid_of.values()))
    assert all(m["type"] == "text" and m["text"]["body"] for _, m in replies)
    assert handle.state.statistics().webhook_items == 12


async def test_stats_endpoint_counts_duplicates() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle: SimulatorHandle = await nursery.start(serve_simulator, SimulatorConfig())
            endpoint = AccountEndpoint("a", handle.api_url, "1001", "t")
            async with CloudApiGateway().open_session() as session:
                for recipient_id in (5, 5, 6, 7, 7, 7):
                    assert (await session.send(endpoint, _text(recipient_id, "+1555123"))).ok
                await session.send(endpoint, _text(8, "+15550000"))  # rejected
            origin, _ = split_url(handle.url)
            connection = HTTPConnection(origin)
            stats = json.loads((await connection.request("GET", "/simulator/stats", [])).body)
            sends = json.loads(
                (await connection.request("GET", "/simulator/sends?callback=7", [])).body
            )
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert stats["duplicates"] == 2
    assert (stats["accepted"], stats["rejected"], stats["requests"]) == (6, 1, 7)
    assert stats["rejected_by_code"] == {"131026": 1}
    assert sends == {"callback": "7", "accepted": 3}
    assert handle.state.duplicates == 2 and handle.state.sends_for("5") == 2


async def test_invalid_bodies_are_rejected_with_code_100() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle: SimulatorHandle = await nursery.start(serve_simulator, SimulatorConfig())
            origin, base = split_url(handle.api_url)
            connection = HTTPConnection(origin)
            auth = [(b"authorization", b"Bearer t")]
            answers = []
            for body in (
                b"not json",
                b'{"messaging_product":"whatsapp","to":"+1555","type":"text"}',  # no text object
                b'{"messaging_product":"sms","to":"+1555","type":"text","text":{"body":"x"}}',
                b'{"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}',
            ):
                response = await connection.request("POST", f"{base}/1001/messages", auth, body)
                answers.append((response.status, json.loads(response.body)["error"]["code"]))
            unversioned = await connection.request(
                "POST",
                "/1001/messages",
                auth,
                b'{"messaging_product":"whatsapp","to":"+1555","type":"text","text":{"body":"x"}}',
            )
            await connection.aclose()
            nursery.cancel_scope.cancel()
    assert answers == [(400, 100)] * 4
    assert unversioned.status == 200
    assert handle.state.statistics().rejected_by_code == {"100": 4}


async def test_cli_prints_its_address_and_exits_0_on_sigterm() -> None:
    code = "import sys; from engine.tools.simulator import main; sys.exit(main(sys.argv[1:]))"
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            command = [sys.executable, "-c", code, "--port", "0", "--latency-ms", "0"]
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
            endpoint = AccountEndpoint("a", f"{url}/v21.0", "1001", "t")
            async with CloudApiGateway().open_session() as session:
                assert (await session.send(endpoint, _text(1, "+1555"))).ok
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
