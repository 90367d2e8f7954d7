"""Every HTTP route over a real socket: envelopes, validation, auth, tenancy, paging."""

from __future__ import annotations

import uuid
from typing import Any

import h11
import msgspec
import pytest
import trio

from api import params
from api.app import create_app
from engine.clock import WallClock
from engine.messages import CampaignEvent
from engine.service.monitoring import Monitoring
from engine.store.database import Database
from tests.api_helpers import (
    OTHER_USER,
    Harness,
    Reply,
    api,
    api_settings,
    expired_token,
    gateway,
)

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def assert_error(reply: Reply, status: int, code: str, field: str | None = None) -> str:
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["success"] is False
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"]["code"] == code, body
    if field is not None:
        assert body["error"]["field"] == field, body
        assert body["message"].startswith(field), body["message"]
    message: str = body["message"]
    return message


def assert_ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["success"] is True and isinstance(body["message"], str)
    return body["data"]


async def test_health_and_metrics(api: Harness) -> None:
    with trio.fail_after(20):
        health = await api.request("GET", "/healthz", user=None)
        assert (health.status, health.json()) == (200, {"status": "ok"})
        metrics = await api.request("GET", "/metrics", user=None)
        assert metrics.status == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.body.decode()
        for name in (
            "campaign_engine_running_campaigns",
            "campaign_engine_pending_recipients",
            "campaign_engine_webhook_facts_applied_total",
            "campaign_engine_socketio_clients",
            "campaign_engine_messages_sent_total",
        ):
            assert name in text


async def test_authentication(api: Harness) -> None:
    with trio.fail_after(20):
        for token in (None, "not-a-jwt", expired_token(), api.token() + "x"):
            reply = await api.request("GET", "/api/v1/accounts", user=None, token=token)
            assert_error(reply, 401, "unauthorized")
        wrong_scheme = await api.request(
            "GET", "/api/v1/queue", user=None, headers={"Authorization": f"Basic {api.token()}"}
        )
        assert_error(wrong_scheme, 401, "unauthorized")
        # A token without expiry is accepted.
        reply = await api.request("GET", "/api/v1/accounts", token=api.token(ttl=None))
        assert assert_ok(reply) == []
        # Unknown routes: 404 in the envelope (after auth under /api/v1).
        assert_error(await api.request("GET", "/api/v1/nope"), 404, "not_found")
        assert_error(await api.request("GET", "/nope", user=None), 404, "not_found")
        assert_error(await api.request("PUT", "/api/v1/accounts"), 405, "method_not_allowed")


async def test_accounts(api: Harness) -> None:
    with trio.fail_after(20):
        created = await api.request(
            "POST",
            "/api/v1/accounts",
            {"name": "Main", "phoneNumberId": "PN1", "accessToken": "secret-abc"},
        )
        account = assert_ok(created, 201)
        assert b"secret-abc" not in created.body
        assert account["status"] == "connected" and account["messages_per_second"] == 80
        key = account["id"]
        assert assert_ok(await api.request("GET", f"/api/v1/accounts/{key}"))["id"] == key
        patched = assert_ok(
            await api.request(
                "PATCH",
                f"/api/v1/accounts/{key}",
                {"status": "disconnected", "messagesPerSecond": 20, "accessToken": "new"},
            )
        )
        assert (patched["status"], patched["messages_per_second"]) == ("disconnected", 20)
        assert "access_token" not in patched
        assert_error(
            await api.request("PATCH", f"/api/v1/accounts/{key}", {"messagesPerSecond": 0}),
            400,
            "validation_failed",
            "messagesPerSecond",
        )
        # Another user sees nothing of it.
        assert_error(
            await api.request("GET", f"/api/v1/accounts/{key}", user=OTHER_USER), 404, "not_found"
        )
        assert assert_ok(await api.request("GET", "/api/v1/accounts", user=OTHER_USER)) == []
        assert_error(
            await api.request("DELETE", f"/api/v1/accounts/{key}", user=OTHER_USER),
            404,
            "not_found",
        )
        # Not a UUID: a 404 like any unknown id.
        assert_error(await api.request("GET", "/api/v1/accounts/42"), 404, "not_found")
        # In use by a campaign: refused.
        await api.make_campaign(key)
        assert_error(await api.request("DELETE", f"/api/v1/accounts/{key}"), 400, "account_in_use")
        other = await api.make_account()
        assert assert_ok(await api.request("DELETE", f"/api/v1/accounts/{other}")) == {"id": other}
        assert_error(await api.request("GET", f"/api/v1/accounts/{other}"), 404, "not_found")


async def test_contacts_upsert_batch_rejections_and_duplicates(api: Harness) -> None:
    with trio.fail_after(30):
        single = assert_ok(
            await api.request("POST", "/api/v1/contacts", {"phone": "+14155550100", "tags": ["a"]})
        )
        assert single == {"created": 1, "updated": 0, "rejected": []}
        batch = {
            "contacts": [
                {"phone": "+14155550100", "firstName": "Ann"},  # update
                {"phone": "12345"},  # not E.164
                {"phone": "+14155550101", "tags": [7]},  # wrong type
                {"phone": "+14155550102", "firstName": "Old"},  # duplicate; the last one wins
                {"phone": "+14155550102", "firstName": "New"},
                {"firstName": "No phone"},
            ]
        }
        result = assert_ok(await api.request("POST", "/api/v1/contacts", batch))
        assert (result["created"], result["updated"]) == (1, 1)
        reasons = {r["index"]: r["reason"] for r in result["rejected"]}
        assert sorted(reasons) == [1, 2, 3, 5]
        assert reasons[1].startswith("phone: expected an E.164")
        assert reasons[2].startswith("tags[0]:")
        assert "index 4" in reasons[3]
        assert reasons[5] == "phone: is required"
        listed = assert_ok(await api.request("GET", "/api/v1/contacts"))
        by_phone = {c["phone"]: c for c in listed}
        assert by_phone["+14155550102"]["first_name"] == "New"
        assert by_phone["+14155550100"]["first_name"] == "Ann"
        # A single invalid contact is a 400 naming the field.
        assert_error(
            await api.request("POST", "/api/v1/contacts", {"phone": "555"}),
            400,
            "validation_failed",
            "phone",
        )
        too_many = {"contacts": [{"phone": f"+1555{i:07d}"} for i in range(10_001)]}
        message = assert_error(
            await api.request("POST", "/api/v1/contacts", too_many),
            400,
            "validation_failed",
            "contacts",
        )
        assert "10000" in message
        assert len(assert_ok(await api.request("GET", "/api/v1/contacts"))) == 2

        key = by_phone["+14155550100"]["id"]
        own = assert_ok(await api.request("GET", f"/api/v1/contacts/{key}"))
        assert (own["phone"], own["first_name"], own["tags"]) == ("+14155550100", "Ann", [])
        patched = assert_ok(
            await api.request("PATCH", f"/api/v1/contacts/{key}", {"optedOut": True, "tags": ["x"]})
        )
        assert patched["opted_out"] is True and patched["tags"] == ["x"]
        assert_error(
            await api.request("PATCH", f"/api/v1/contacts/{key}", {"phone": "+14155550102"}),
            400,
            "duplicate_phone",
            "phone",
        )
        assert_error(
            await api.request("GET", f"/api/v1/contacts/{key}", user=OTHER_USER), 404, "not_found"
        )
        assert assert_ok(await api.request("DELETE", f"/api/v1/contacts/{key}")) == {"id": key}
        assert_error(await api.request("DELETE", f"/api/v1/contacts/{key}"), 404, "not_found")


async def test_pagination_walks_every_item_once(api: Harness) -> None:
    with trio.fail_after(30):
        await api.make_contacts(23)
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            path = "/api/v1/contacts?limit=5" + (f"&cursor={cursor}" if cursor else "")
            reply = await api.request("GET", path)
            body = reply.json()
            assert reply.status == 200
            seen += [c["id"] for c in body["data"]]
            cursor = body["pagination"]["next_cursor"]
            pages += 1
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 23
        assert pages == 5
        for bad in ("0", "501", "ten"):
            assert_error(
                await api.request("GET", f"/api/v1/contacts?limit={bad}"),
                400,
                "validation_failed",
                "limit",
            )
        assert_error(
            await api.request("GET", "/api/v1/contacts?cursor=%%%"), 400, "invalid_cursor", "cursor"
        )
        # Campaigns page newest first by (created_at, id).
        account = await api.make_account()
        made = [(await api.make_campaign(account, name=f"C{i}"))["id"] for i in range(4)]
        first = (await api.request("GET", "/api/v1/campaigns?limit=3")).json()
        rest = (
            await api.request(
                "GET", f"/api/v1/campaigns?limit=3&cursor={first['pagination']['next_cursor']}"
            )
        ).json()
        listed = [c["id"] for c in first["data"] + rest["data"]]
        assert listed == list(reversed(made)) and rest["pagination"]["next_cursor"] is None


async def test_segments(api: Harness) -> None:
    with trio.fail_after(20):
        await api.make_contacts(6)  # odd numbers are tagged "vip"
        reply = await api.request(
            "POST", "/api/v1/segments", {"name": "VIP", "filter": {"tags": ["vip"]}}
        )
        segment = assert_ok(reply, 201)
        assert set(segment) == {"id", "name", "size"} and segment["size"] == 3
        listed = assert_ok(await api.request("GET", "/api/v1/segments"))
        assert [s["id"] for s in listed] == [segment["id"]]
        assert assert_ok(await api.request("GET", f"/api/v1/segments/{segment['id']}"))["size"] == 3
        assert_error(
            await api.request("POST", "/api/v1/segments", {"name": "Empty", "filter": {}}),
            400,
            "validation_failed",
            "filter",
        )
        assert_error(
            await api.request(
                "POST", "/api/v1/segments", {"name": "X", "filter": {"contactIds": ["nope"]}}
            ),
            400,
            "validation_failed",
            "filter.contactIds[0]",
        )
        assert_error(
            await api.request("GET", f"/api/v1/segments/{segment['id']}", user=OTHER_USER),
            404,
            "not_found",
        )
        assert assert_ok(await api.request("DELETE", f"/api/v1/segments/{segment['id']}"))
        assert_error(
            await api.request("GET", f"/api/v1/segments/{segment['id']}"), 404, "not_found"
        )


CAMPAIGN = {
    "name": "Launch",
    "messageType": "text",
    "messageContent": "Hi {{firstName}}",
    "audienceType": "all",
    "audienceConfig": {},
    "scheduleType": "manual",
}


async def test_campaign_validation_names_field_and_rule(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        others = await api.make_account(user=OTHER_USER)
        base = CAMPAIGN | {"accountId": account}
        cases: list[tuple[dict[str, Any], str, str]] = [
            (
                {k: v for k, v in base.items() if k != "accountId"},
                "accountId",
                "accountId: is required",
            ),
            (base | {"name": 123}, "name", "name: expected a non-empty string"),
            (
                base | {"throttleConfig": {"messagesPerMinute": 0}},
                "throttleConfig.messagesPerMinute",
                "throttleConfig.messagesPerMinute: expected a number from 1 to 60000",
            ),
            (
                base | {"throttleConfig": {"batchSize": 10_001}},
                "throttleConfig.batchSize",
                "throttleConfig.batchSize: expected an integer from 1 to 10000",
            ),
            (
                base | {"throttleConfig": {"delayBetweenBatches": -1}},
                "throttleConfig.delayBetweenBatches",
                "throttleConfig.delayBetweenBatches: expected an integer from 0 to 3600000",
            ),
            (
                base | {"audienceType": "everyone"},
                "audienceType",
                'audienceType: expected one of "all", "segment", "tags", "contacts"',
            ),
            (base | {"scheduleType": "scheduled"}, "scheduledAt", "scheduledAt: is required"),
            (
                base | {"scheduleType": "scheduled", "scheduledAt": "tomorrow"},
                "scheduledAt",
                "scheduledAt: expected an ISO-8601 date-time",
            ),
            (
                base | {"audienceType": "segment"},
                "audienceConfig.segmentId",
                "audienceConfig.segmentId: is required",
            ),
            (
                base
                | {"audienceType": "segment", "audienceConfig": {"segmentId": str(uuid.uuid4())}},
                "audienceConfig.segmentId",
                "audienceConfig.segmentId: no such segment",
            ),
            (
                base | {"audienceType": "tags", "audienceConfig": {"tags": []}},
                "audienceConfig.tags",
                "audienceConfig.tags: expected an array",
            ),
            (base | {"accountId": others}, "accountId", "accountId: no such WhatsApp account"),
            (base | {"accountId": "not-a-uuid"}, "accountId", "accountId: expected a UUID"),
            (
                base | {"messageType": "template", "messageContent": {"language": "en"}},
                "messageContent.name",
                "messageContent.name: is required",
            ),
            (
                base | {"messageType": "image", "messageContent": "caption"},
                "mediaUrl",
                "mediaUrl: is required",
            ),
            (base | {"colour": "red"}, "colour", "colour: is not a known field"),
        ]
        for body, field, message in cases:
            reply = await api.request("POST", "/api/v1/campaigns", body)
            got = assert_error(reply, 400, "validation_failed", field)
            assert got.startswith(message), (got, message)
        malformed = await api.request("POST", "/api/v1/campaigns", body=b'{"name": ')
        assert_error(malformed, 400, "malformed_json")
        assert_error(
            await api.request("POST", "/api/v1/campaigns", body=b""), 400, "malformed_json"
        )
        assert_error(
            await api.request("POST", "/api/v1/campaigns", [1, 2]), 400, "validation_failed"
        )
        # None of the failed requests left anything behind.
        assert assert_ok(await api.request("GET", "/api/v1/campaigns")) == []
        # A valid template campaign, scheduled for later.
        template = base | {
            "messageType": "template",
            "messageContent": {"name": "launch", "language": "en_US"},
            "scheduleType": "scheduled",
            "scheduledAt": "2099-01-01T10:00:00Z",
        }
        created = assert_ok(await api.request("POST", "/api/v1/campaigns", template), 201)
        assert created["status"] == "scheduled"
        assert created["scheduled_at"] == "2099-01-01T10:00:00.000Z"
        assert created["message_content"] == {
            "name": "launch",
            "language": "en_US",
            "components": [],
        }
        assert created["throttle_config"] == {
            "messagesPerMinute": 20,
            "batchSize": 100,
            "delayBetweenBatches": 0,
        }


async def test_body_too_large(api: Harness) -> None:
    """Answered 413 as soon as the declared length is over the limit; the client may
    still be writing, so this test speaks HTTP itself and reads the answer."""
    with trio.fail_after(30):
        limit = api.settings.server.max_body_bytes
        head = (
            "POST /api/v1/contacts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {api.token()}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {limit + 1}\r\nConnection: close\r\n\r\n"
        )
        stream = await trio.open_tcp_stream("127.0.0.1", api.port)
        async with stream:
            await stream.send_all(head.encode() + b'{"contacts": [')
            client = h11.Connection(h11.CLIENT)
            client.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
            client.receive_data(await stream.receive_some(65536))
            response = client.next_event()
            while response is h11.NEED_DATA:
                client.receive_data(await stream.receive_some(65536))
                response = client.next_event()
            assert isinstance(response, h11.Response) and response.status_code == 413
            content = b""
            while not isinstance(event := client.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Data):
                    content += event.data
        body = msgspec.json.decode(content)
        assert body["success"] is False and body["error"]["code"] == "payload_too_large"
        assert str(limit) in body["message"]
        assert assert_ok(await api.request("GET", "/api/v1/contacts")) == []


async def _next_event(
    events: trio.MemoryReceiveChannel[Any], name: str, campaign_id: str
) -> CampaignEvent:
    async for event in events:
        if (
            isinstance(event, CampaignEvent)
            and event.name == name
            and event.payload["campaignId"] == campaign_id
        ):
            return event
    raise AssertionError("broadcaster closed")


async def test_campaign_lifecycle_over_http(api: Harness) -> None:
    with trio.fail_after(60):
        account = await api.make_account()
        await api.make_contacts(8)
        draft = await api.make_campaign(account)
        key = draft["id"]
        assert draft["status"] == "draft" and draft["total_recipients"] == 0
        # Draft: everything editable, validated together.
        edited = assert_ok(
            await api.request(
                "PATCH",
                f"/api/v1/campaigns/{key}",
                {"name": "Renamed", "audienceType": "tags", "audienceConfig": {"tags": ["vip"]}},
            )
        )
        assert (edited["name"], edited["audience_config"]) == ("Renamed", {"tags": ["vip"]})
        assert_error(
            await api.request("PATCH", f"/api/v1/campaigns/{key}", {"messageType": "image"}),
            400,
            "validation_failed",
            "mediaUrl",
        )
        assert_error(
            await api.request("GET", f"/api/v1/campaigns/{key}", user=OTHER_USER), 404, "not_found"
        )
        assert_error(
            await api.request("POST", f"/api/v1/campaigns/{key}/start", user=OTHER_USER),
            404,
            "not_found",
        )
        assert_error(await api.request("GET", "/api/v1/campaigns/123"), 404, "not_found")

        duplicated = assert_ok(await api.request("POST", f"/api/v1/campaigns/{key}/duplicate"), 201)
        assert duplicated["name"] == "Renamed (Copy)" and duplicated["status"] == "draft"
        assert duplicated["total_recipients"] == 4  # the "vip" half of 8 contacts
        assert set(duplicated) == {"id", "name", "status", "total_recipients"}

        api.gateway.block_after(1)  # hold sends in flight so the campaign stays running
        async with api.engine.broadcaster.subscribe() as events:
            started = await api.request("POST", f"/api/v1/campaigns/{key}/start")
            data = assert_ok(started)
            assert started.json()["message"] == "Campaign started successfully"
            assert set(data) == {"id", "status", "scheduled_at"} and data["status"] == "scheduled"
            await _next_event(events, "campaign:started", key)
            await api.gateway.wait_held(1)

            again = await api.request("POST", f"/api/v1/campaigns/{key}/start")
            assert (
                assert_error(again, 400, "campaign_already_running")
                == "Campaign is already running"
            )
            assert_error(
                await api.request("DELETE", f"/api/v1/campaigns/{key}"), 400, "campaign_running"
            )
            assert_error(
                await api.request("PATCH", f"/api/v1/campaigns/{key}", {"name": "No"}),
                400,
                "field_not_editable",
                "name",
            )
            live = assert_ok(
                await api.request(
                    "PATCH",
                    f"/api/v1/campaigns/{key}",
                    {"throttleConfig": {"messagesPerMinute": 120}},
                )
            )
            assert live["throttle_config"]["messagesPerMinute"] == 120

            paused = await api.request("POST", f"/api/v1/campaigns/{key}/pause")
            assert paused.json()["message"] == "Campaign paused successfully"
            assert set(paused.json()["data"]) == {"id", "status", "paused_at"}
            assert paused.json()["data"]["status"] == "paused"
            api.gateway.release()
            await _next_event(events, "campaign:paused", key)
            assert_error(
                await api.request("PATCH", f"/api/v1/campaigns/{key}", {"audienceType": "all"}),
                400,
                "field_not_editable",
                "audienceType",
            )
            resumed = await api.request("POST", f"/api/v1/campaigns/{key}/resume")
            assert resumed.json()["message"] == "Campaign resumed successfully"
            assert set(resumed.json()["data"]) == {"id", "status"}
            done = await _next_event(events, "campaign:completed", key)
            assert done.payload["campaign"]["stats"]["sent"] == 4

        campaign = assert_ok(await api.request("GET", f"/api/v1/campaigns/{key}"))
        assert campaign["status"] == "completed" and campaign["progress"] == 100
        recipients = assert_ok(
            await api.request("GET", f"/api/v1/campaigns/{key}/recipients?status=sent")
        )
        assert len(recipients) == 4
        assert set(recipients[0]) == {
            "contact_id",
            "phone",
            "status",
            "attempts",
            "error_code",
            "error_message",
            "provider_message_id",
            "sent_at",
            "delivered_at",
            "read_at",
            "replied_at",
        }
        assert recipients[0]["sent_at"].endswith("Z")
        assert_error(
            await api.request("GET", f"/api/v1/campaigns/{key}/recipients?status=bogus"),
            400,
            "validation_failed",
            "status",
        )
        assert_error(
            await api.request("GET", f"/api/v1/campaigns/{key}/recipients", user=OTHER_USER),
            404,
            "not_found",
        )
        assert_error(
            await api.request("POST", f"/api/v1/campaigns/{key}/cancel"), 400, "campaign_finished"
        )
        finished = await api.request("PATCH", f"/api/v1/campaigns/{key}", {"name": "Late"})
        assert_error(finished, 400, "campaign_finished")

        listed = assert_ok(await api.request("GET", "/api/v1/campaigns?status=completed"))
        assert [c["id"] for c in listed] == [key]
        assert_error(
            await api.request("GET", "/api/v1/campaigns?status=done"),
            400,
            "validation_failed",
            "status",
        )

        # Cancel a draft; delete it.
        copy = duplicated["id"]
        cancelled = await api.request("POST", f"/api/v1/campaigns/{copy}/cancel")
        assert cancelled.json()["message"] == "Campaign cancelled successfully"
        data = cancelled.json()["data"]
        assert set(data) == {"id", "status", "cancelled_at"} and data["status"] == "cancelled"
        assert data["cancelled_at"].endswith("Z")
        assert assert_ok(await api.request("DELETE", f"/api/v1/campaigns/{copy}")) == {"id": copy}
        assert_error(await api.request("GET", f"/api/v1/campaigns/{copy}"), 404, "not_found")


async def test_queue_health(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        await api.make_contacts(5)
        api.gateway.block_after(0)
        async with api.engine.broadcaster.subscribe() as events:
            campaign = await api.make_campaign(account, scheduleType="now")
            await _next_event(events, "campaign:started", campaign["id"])
            await api.gateway.wait_held(1)
            queue = assert_ok(await api.request("GET", "/api/v1/queue"))
            assert set(queue) == {
                "waiting",
                "active",
                "failed",
                "completed",
                "processing_rate_per_minute",
                "running_campaigns",
            }
            assert queue["running_campaigns"] == 1
            assert queue["active"] >= 1 and queue["waiting"] + queue["active"] == 5
            assert assert_ok(await api.request("GET", "/api/v1/queue", user=OTHER_USER)) == {
                "waiting": 0,
                "active": 0,
                "failed": 0,
                "completed": 0,
                "processing_rate_per_minute": 0,
                "running_campaigns": 0,
            }
            api.gateway.release()
            await _next_event(events, "campaign:completed", campaign["id"])
        queue = assert_ok(await api.request("GET", "/api/v1/queue"))
        assert queue["completed"] == 5 and queue["processing_rate_per_minute"] == 5
        assert queue["running_campaigns"] == 0 and queue["waiting"] == 0


async def test_odd_input_is_a_400_never_a_500(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        nul = await api.request(
            "POST",
            "/api/v1/accounts",
            body=b'{"name": "a\\u0000b", "phoneNumberId": "P", "accessToken": "t"}',
        )
        assert_error(nul, 400, "invalid_value")
        assert len(assert_ok(await api.request("GET", "/api/v1/accounts"))) == 1
        campaign = await api.make_campaign(account)
        forged = params.encode_cursor(["2025-01-01T00:00:00Z", "not-a-uuid"])
        assert_error(
            await api.request("GET", f"/api/v1/campaigns?cursor={forged}"), 400, "invalid_cursor"
        )
        huge = params.encode_cursor(2**70)
        assert_error(
            await api.request(
                "GET", f"/api/v1/campaigns/{campaign['id']}/recipients?cursor={huge}"
            ),
            400,
            "invalid_cursor",
        )
        assert_error(
            await api.request("POST", "/api/v1/contacts", {"contacts": "many"}),
            400,
            "validation_failed",
            "contacts",
        )
        assert_error(
            await api.request("POST", "/api/v1/contacts", ["+15550000000"]),
            400,
            "validation_failed",
        )
        assert_error(
            await api.request("PATCH", f"/api/v1/campaigns/{campaign['id']}", body=b"null"),
            400,
            "validation_failed",
        )


class UnreachableDatabase(Database):
    """The real Database class, with the server gone."""

    def __init__(self) -> None:
        pass

    async def fetchval(self, query: str, *args: Any) -> Any:
        raise OSError("connection refused")


async def test_healthz_503_when_the_database_does_not_answer() -> None:
    class NoEngine:
        monitoring = Monitoring(UnreachableDatabase(), WallClock(), lambda: None)  # type: ignore[arg-type, return-value]

    app = create_app(NoEngine(), api_settings())  # type: ignore[arg-type]
    reply = await app.test_client().get("/healthz")
    assert reply.status_code == 503
    assert (await reply.get_json())["status"] != "ok"
