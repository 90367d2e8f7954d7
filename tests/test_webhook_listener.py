"""The dedicated webhook listener (api/webhook_listener.py) next to the API port's
`/webhooks/whatsapp`: keep-alive, its bounds, and the same answers and the same facts
whichever door a request came through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from api.webhook_listener import MAX_HEAD_BYTES, serve_webhook_listener
from api.webhooks.receive import door_for
from engine.core.webhook_payload import sign
from engine.daemon import Listening, serve
from engine.messages import CampaignEvent
from engine.service.engine import Engine
from engine.store.database import Database
from engine.transport.http1 import HTTPConnection, Origin
from tests.api_helpers import (
    APP_SECRET,
    BASE_ENVIRONMENT,
    VERIFY_TOKEN,
    Harness,
    Reply,
    api_settings,
    gateway,
    open_harness,
)
from tests.fake_gateway import ScriptedGateway

__all__ = ["gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

T0 = 1_760_000_000
MAX_BODY = 4096


class Doors(msgspec.Struct):
    """The daemon under test with both doors open."""

    api: Harness
    listener_port: int

    async def post(self, door: str, body: bytes, signature: str | None = "valid") -> Reply:
        headers = {"content-type": "application/json"}
        if signature == "valid":
            headers["x-hub-signature-256"] = sign(APP_SECRET, body)
        elif signature is not None:
            headers["x-hub-signature-256"] = signature
        if door == "api":
            return await self.api.request(
                "POST", "/webhooks/whatsapp", body=body, user=None, headers=headers
            )
        return await self.listener("POST", "/webhooks/whatsapp", body, headers)

    async def get(self, door: str, target: str) -> Reply:
        if door == "api":
            return await self.api.request("GET", target, user=None)
        return await self.listener("GET", target)

    async def listener(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        connection = HTTPConnection(Origin("http", "127.0.0.1", self.listener_port))
        try:
            head = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
            response = await connection.request(method, target, head, body)
        finally:
            await connection.aclose()
        return Reply(
            response.status, {k.decode(): v.decode() for k, v in response.headers}, response.body
        )


async def open_doors(
    db: Database,
    gateway: ScriptedGateway,
    environment: dict[str, str],
    *,
    task_status: trio.TaskStatus[Doors] = trio.TASK_STATUS_IGNORED,
) -> None:
    settings = api_settings(CAMPAIGN_ENGINE_WEBHOOKS_MAX_BODY_BYTES=str(MAX_BODY), **environment)
    async with trio.open_nursery() as nursery:
        harness: Harness = await nursery.start(open_harness, db, settings, gateway)
        port: int = await nursery.start(
            partial(
                serve_webhook_listener,
                door_for(harness.engine, settings),
                host="127.0.0.1",
                port=0,
            )
        )
        task_status.started(Doors(harness, port))


@pytest.fixture
async def doors(db: Database, gateway: ScriptedGateway) -> AsyncIterator[Doors]:
    async with trio.open_nursery() as nursery:
        opened: Doors = await nursery.start(open_doors, db, gateway, {})
        yield opened
        nursery.cancel_scope.cancel()


# --- payloads -------------------------------------------------------------------------------


def status(wamid: str, kind: str, reference: str | None = None, **extra: Any) -> Any:
    item: dict[str, Any] = {"id": wamid, "status": kind, "timestamp": str(T0), "recipient_id": "1"}
    if reference is not None:
        item["biz_opaque_callback_data"] = reference
    return item | extra


def notification(statuses: list[Any], messages: list[Any] | None = None) -> bytes:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PN1"},
        "statuses": statuses,
    }
    if messages:
        value["messages"] = messages
    return msgspec.json.encode(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}],
        }
    )


async def sent_campaign(api: Harness, size: int) -> tuple[str, list[tuple[int, str]]]:
    """A completed campaign: its id and (recipient id, wamid) in id order."""
    account = await api.make_account()
    await api.make_contacts(size)
    async with api.engine.broadcaster.subscribe() as events:
        campaign = await api.make_campaign(account, scheduleType="now")
        async for event in events:
            if (
                isinstance(event, CampaignEvent)
                and event.name == "campaign:completed"
                and event.payload["campaignId"] == campaign["id"]
            ):
                break
    rows = await api.db.fetch(
        """SELECT id, provider_message_id FROM campaign_recipients
           WHERE campaign_id = $1 ORDER BY id""",
        campaign["id"],
    )
    return campaign["id"], [(r["id"], r["provider_message_id"]) for r in rows]


async def stats_event(engine: Engine, campaign_id: str, **want: int) -> Any:
    async with engine.broadcaster.subscribe() as events:
        async for event in events:
            if (
                isinstance(event, CampaignEvent)
                and event.name == "campaign:stats"
                and event.payload["campaignId"] == campaign_id
                and all(event.payload["stats"][k] == v for k, v in want.items())
            ):
                return event.payload
    raise AssertionError("broadcaster closed")


# --- tests ----------------------------------------------------------------------------------


async def test_one_keep_alive_connection_carries_one_status_per_request(doors: Doors) -> None:
    with trio.fail_after(60):
        campaign, recipients = await sent_campaign(doors.api, 3)
        references = doors.api.engine.callback_references
        connection = HTTPConnection(Origin("http", "127.0.0.1", doors.listener_port))
        async with trio.open_nursery() as nursery:
            applied = trio.Event()

            async def wait_applied() -> None:
                await stats_event(doors.api.engine, campaign, delivered=3)
                applied.set()

            nursery.start_soon(wait_applied)
            await trio.testing.wait_all_tasks_blocked()
            for recipient_id, wamid in recipients:
                body = notification([status(wamid, "delivered", references.issue(recipient_id))])
                head = [(b"x-hub-signature-256", sign(APP_SECRET, body).encode())]
                response = await connection.request("POST", "/webhooks/whatsapp", head, body)
                assert (response.status, response.body) == (200, b'{"success":true}')
            await applied.wait()
        assert connection.connections_opened == 1
        await connection.aclose()


async def test_both_doors_give_the_same_answers(doors: Doors) -> None:
    good = notification([status("wamid.unknown", "delivered")])
    all_refused = notification([status("wamid.x", "read", timestamp="²")])
    with trio.fail_after(60):
        posts: list[tuple[bytes, str | None]] = [
            (good, "valid"),
            (all_refused, "valid"),
            (good, None),
            (good, "sha256=" + "0" * 64),
            (good, "sha256=é"),  # not ASCII
            (good, sign("other-secret", good)),
            (b"{", "valid"),
            (b"[]", "valid"),
            (b'{"entry": {}}', "valid"),
            (b'{"entry": [{"changes": [{"field": 1}]}]}', "valid"),
            (b"{" + b" " * MAX_BODY + b"}", "valid"),  # larger than webhooks.max_body_bytes
        ]
        for body, signature in posts:
            api = await doors.post("api", body, signature)
            listener = await doors.post("listener", body, signature)
            assert (api.status, api.json()) == (listener.status, listener.json()), body[:40]
            assert api.headers["content-type"] == listener.headers["content-type"]
        expected = {200: 4, 400: 8, 401: 8, 413: 2}
        statuses = [await doors.post(d, b, s) for b, s in posts for d in ("api", "listener")]
        assert {code: [r.status for r in statuses].count(code) for code in expected} == expected
        malformed = await doors.post("listener", b'{"entry": {}}')
        assert malformed.json()["error"] == {"code": "malformed_payload", "field": "entry"}
        assert "entry" in malformed.json()["message"]
        assert (await doors.post("listener", good, "sha256=é")).json()["error"] == {
            "code": "invalid_signature"
        }

        challenge = "/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=42&hub.verify_token="
        for target in (challenge + VERIFY_TOKEN, challenge + "wrong", challenge + "%C3%A9"):
            api = await doors.get("api", target)
            listener = await doors.get("listener", target)
            assert (api.status, api.body) == (listener.status, listener.body)
        assert (await doors.get("listener", challenge + VERIFY_TOKEN)).body == b"42"
        assert (await doors.get("listener", challenge + "%C3%A9")).status == 403
    # Each door counted the refused fact; nothing else was queued as unusable.
    assert doors.api.engine.statistics().webhooks.refused == 4


async def test_the_same_facts_whichever_door(doors: Doors) -> None:
    with trio.fail_after(60):
        campaign, recipients = await sent_campaign(doors.api, 4)
        (a1, w1), (a2, w2), (b1, w3), (b2, w4) = recipients
        references = doors.api.engine.callback_references

        def batch(first: tuple[int, str], second: tuple[int, str]) -> bytes:
            """A batched body: a delivered by reference, a read by wamid, a reply, a bad fact."""
            reply = {
                "from": "1555",
                "id": f"wamid.in.{second[1]}",
                "timestamp": str(T0 + 3),
                "type": "text",
                "context": {"from": "15550001111", "id": second[1]},
            }
            return notification(
                [
                    status(first[1], "delivered", references.issue(first[0])),
                    status(second[1], "read", timestamp=str(T0 + 2)),
                    status(second[1], "read", errors=[{"code": 1, "title": "nul\x00"}]),
                ],
                [reply],
            )

        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def wait_applied() -> None:
                await stats_event(doors.api.engine, campaign, delivered=4, read=2, replied=2)
                done.set()

            nursery.start_soon(wait_applied)
            await trio.testing.wait_all_tasks_blocked()
            assert (await doors.post("api", batch((a1, w1), (a2, w2)))).status == 200
            assert (await doors.post("listener", batch((b1, w3), (b2, w4)))).status == 200
            await done.wait()

        rows = {
            r["id"]: r
            for r in await doors.api.db.fetch(
                "SELECT * FROM campaign_recipients WHERE campaign_id = $1", campaign
            )
        }
        columns = ("status", "delivered_at", "read_at", "replied_at", "error_code")
        assert [rows[a1][c] for c in columns] == [rows[b1][c] for c in columns]
        assert [rows[a2][c] for c in columns] == [rows[b2][c] for c in columns]
        assert rows[a2]["status"] == "read" and rows[a2]["replied_at"] is not None
        stats = doors.api.engine.statistics().webhooks
        assert (stats.received, stats.refused) == (6, 2)


async def test_a_full_backlog_answers_503_on_both_doors(
    db: Database, gateway: ScriptedGateway
) -> None:
    # The applier waits ten minutes before storing: the queue only fills.
    environment = {
        "CAMPAIGN_ENGINE_WEBHOOKS_MAX_QUEUED": "3",
        "CAMPAIGN_ENGINE_WEBHOOKS_FLUSH_INTERVAL_MS": "600000",
    }
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            doors: Doors = await nursery.start(open_doors, db, gateway, environment)
            two = notification([status("wamid.1", "sent"), status("wamid.2", "sent")])
            one = notification([status("wamid.3", "sent")])
            assert (await doors.post("api", two)).status == 200
            for door in ("api", "listener"):
                full = await doors.post(door, two)
                assert full.status == 503
                assert full.json()["error"]["code"] == "webhook_backlog_full"
            assert (await doors.post("listener", one)).status == 200
            assert (await doors.post("api", one)).status == 503
            assert doors.api.engine.statistics().webhooks.queued == 3
            nursery.cancel_scope.cancel()


# --- the listener's own bounds, on raw sockets ---------------------------------------------


async def exchange(port: int, data: bytes) -> bytes:
    """Write `data`, read until the listener closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        return received


def request_head(method: str, target: str, **headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "host: test"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_the_listener_bounds_heads_and_bodies_and_closes(doors: Doors) -> None:
    port = doors.listener_port
    with trio.fail_after(30):
        big_head = request_head("POST", "/webhooks/whatsapp", x_padding="a" * MAX_HEAD_BYTES)
        answer = await exchange(port, big_head)
        assert answer.startswith(b"HTTP/1.1 431 ") and b"connection: close" in answer

        declared = request_head("POST", "/webhooks/whatsapp", content_length=str(MAX_BODY + 1))
        answer = await exchange(port, declared)
        assert answer.startswith(b"HTTP/1.1 413 ") and b"payload_too_large" in answer

        # Chunked: no length up front, refused once it grows past the limit.
        chunk = b"%x\r\n%s\r\n" % (MAX_BODY, b"a" * MAX_BODY)
        chunked = request_head("POST", "/webhooks/whatsapp", transfer_encoding="chunked")
        answer = await exchange(port, chunked + chunk + chunk + b"0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413 ")

        answer = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ") and b"bad_request" in answer

        closing = {"connection": "close"}
        assert (await doors.listener("GET", "/healthz", headers=closing)).status == 200
        missing = await doors.listener("GET", "/elsewhere", headers=closing)
        assert (missing.status, missing.json()["error"]["code"]) == (404, "not_found")
        wrong = await doors.listener("PUT", "/webhooks/whatsapp", b"{}", closing)
        assert (wrong.status, wrong.json()["error"]["code"]) == (405, "method_not_allowed")


async def test_pipelined_and_http_1_0_requests(doors: Doors) -> None:
    body = notification([status("wamid.unknown", "delivered")])
    signed = request_head(
        "POST",
        "/webhooks/whatsapp",
        content_length=str(len(body)),
        x_hub_signature_256=sign(APP_SECRET, body),
    )
    health = b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    with trio.fail_after(30):
        # Three requests in one write: answered in order, the last one closes.
        answer = await exchange(doors.listener_port, signed + body + signed + body + health)
        assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
        assert answer.endswith(b'{"status":"ok"}')
        # HTTP/1.0 has no keep-alive: answered, then closed.
        old = b"GET /healthz HTTP/1.0\r\n\r\n"
        answer = await exchange(doors.listener_port, old)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"], ids=["plain", "h11"])
async def test_the_first_signature_is_the_one_that_counts(doors: Doors, version: str) -> None:
    body = notification([status("wamid.unknown", "delivered")])
    valid, invalid = sign(APP_SECRET, body), "sha256=" + "0" * 64
    statuses = []
    with trio.fail_after(30):
        for first, second in ((valid, invalid), (invalid, valid)):
            head = request_head(
                "POST",
                "/webhooks/whatsapp",
                content_length=str(len(body)),
                x_hub_signature_256=first,
                X_Hub_Signature_256=second,
                connection="close",
            ).replace(b"HTTP/1.1", version.encode(), 1)
            answer = await exchange(doors.listener_port, head + body)
            statuses.append(int(answer.split(b" ", 2)[1]))
    assert statuses == [200, 401]


async def test_expect_100_continue_is_answered_before_the_body(doors: Doors) -> None:
    body = notification([status("wamid.unknown", "delivered")])
    head = request_head(
        "POST",
        "/webhooks/whatsapp",
        content_length=str(len(body)),
        expect="100-continue",
        x_hub_signature_256=sign(APP_SECRET, body),
        connection="close",
    )
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream("127.0.0.1", doors.listener_port)
        async with stream:
            await stream.send_all(head)
            interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(body)
            final = b""
            while chunk := await stream.receive_some(65536):
                final += chunk
    assert final.startswith(b"HTTP/1.1 200 ") and final.endswith(b'{"success":true}')


async def test_the_daemon_serves_the_listener_when_a_port_is_set(database_url: str) -> None:
    environment = BASE_ENVIRONMENT | {"CAMPAIGN_ENGINE_WEBHOOKS_LISTEN_PORT": "0"}
    settings = api_settings(**environment)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            started: tuple[Listening, Engine] = await nursery.start(
                partial(
                    serve,
                    settings,
                    database_url,
                    host="127.0.0.1",
                    port=0,
                    gateway=ScriptedGateway(),
                )
            )
            listening, _engine = started
            assert listening.webhook_url is not None
            port = int(listening.webhook_url.rsplit(":", 1)[1].split("/")[0])
            body = notification([status("wamid.unknown", "delivered")])
            answer = await exchange(
                port,
                request_head(
                    "POST",
                    "/webhooks/whatsapp",
                    content_length=str(len(body)),
                    x_hub_signature_256=sign(APP_SECRET, body),
                    connection="close",
                )
                + body,
            )
            assert answer.startswith(b"HTTP/1.1 200 ")
            nursery.cancel_scope.cancel()
    # Without the setting there is no listener.
    assert api_settings().webhooks.listen_port is None
