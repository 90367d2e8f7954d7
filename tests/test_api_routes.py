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
from engine.service import CampaignInput
from engine.service.errors import InvalidInput
from engine.service.monitoring import Monitoring
from engine.store.database import Database
from tests.api_helpers import (
    OTHER_USER,
    USER,
    Harness,
    Reply,
    api,
    api_settings,
    expired_token,
    gateway,
    open_harness,
)
from tests.fake_gateway import ScriptedGateway

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
            "campaign_engine_sends_released_total",
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
                {"phone": "+14155550102", "firstName": "Old"},  # created ...
                {"phone": "+14155550102", "firstName": "New"},  # ... then updated
                {"firstName": "No phone"},
            ]
        }
        result = assert_ok(await api.request("POST", "/api/v1/contacts", batch))
        assert (result["created"], result["updated"]) == (1, 2)
        reasons = {r["index"]: r["reason"] for r in result["rejected"]}
        assert sorted(reasons) == [1, 2, 5]
        assert reasons[1].startswith("phone: expected an E.164")
        assert reasons[2].startswith("tags[0]:")
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
            "pricing",  # WhatsApp's pricing of the message, from its status webhooks
            "variant",  # its A/B variant's index (none here)
            "deferred_reason",  # why it waits, when the messaging limit or its window holds it
            "deferred_until",
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


# --- hardening: every input the API takes ------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    """`depth` arrays inside each other around `leaf`."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_text(depth: int) -> bytes:
    """The same as JSON text, for depths msgspec cannot encode."""
    return b"[" * depth + b"1" + b"]" * depth


async def row_counts(db: Database) -> dict[str, int]:
    tables = ("accounts", "contacts", "segments", "campaigns", "campaign_recipients")
    counts = {}
    for table in tables:
        counts[table] = int(await db.fetchval(f"SELECT count(*) FROM {table}"))
    return counts


async def test_deeply_nested_bodies_answer_400_naming_the_field(api: Harness) -> None:
    with trio.fail_after(60):
        account = await api.make_account()
        campaign = (await api.make_campaign(account))["id"]
        await api.make_contacts(1)
        contact = assert_ok(await api.request("GET", "/api/v1/contacts"))[0]["id"]
        before = await row_counts(api.db)
        template = CAMPAIGN | {"accountId": account, "messageType": "template"}
        deep = "DEEP"
        cases: list[tuple[str, str, bytes, str]] = [
            (
                "POST",
                "/api/v1/campaigns",
                msgspec.json.encode(
                    template
                    | {"messageContent": {"name": "t", "language": "en", "components": deep}}
                ),
                "messageContent.components",
            ),
            (
                "PATCH",
                f"/api/v1/campaigns/{campaign}",
                msgspec.json.encode({"audienceConfig": {"tags": deep}}),
                "audienceConfig.tags",
            ),
            (
                "POST",
                "/api/v1/contacts",
                msgspec.json.encode({"contacts": [{"phone": "+14155550100"}, deep]}),
                "contacts[1]",
            ),
            (
                "POST",
                "/api/v1/contacts",
                msgspec.json.encode({"phone": "+14155550100", "attributes": {"city": deep}}),
                "attributes.city",
            ),
            (
                "PATCH",
                f"/api/v1/contacts/{contact}",
                msgspec.json.encode({"tags": deep}),
                "tags[0]",
            ),
            (
                "POST",
                "/api/v1/accounts",
                msgspec.json.encode({"name": deep}),
                "name[0]",
            ),
            (
                "PATCH",
                f"/api/v1/accounts/{account}",
                msgspec.json.encode({"status": deep}),
                "status[0]",
            ),
            (
                "POST",
                "/api/v1/segments",
                msgspec.json.encode({"name": "S", "filter": {"contactIds": deep}}),
                "filter.contactIds",
            ),
        ]
        for depth in (33, 5_000):
            for method, path, body, field in cases:
                reply = await api.request(
                    method, path, body=body.replace(b'"DEEP"', nested_text(depth))
                )
                message = assert_error(reply, 400, "validation_failed", field)
                assert message == f"{field}: nested deeper than 32 levels", (path, message)
        # The whole body too deep: named as the body.
        reply = await api.request("POST", "/api/v1/campaigns", body=nested_text(10_000))
        message = assert_error(reply, 400, "validation_failed")
        assert message == "The request body: nested deeper than 32 levels"
        # 32 levels in all is fine as far as nesting goes (the field rules still apply).
        at_limit = {"phone": "+14155550100", "attributes": {"x": nested(30)}}
        reply = await api.request("POST", "/api/v1/contacts", at_limit)
        assert "nested" not in assert_error(reply, 400, "validation_failed", "attributes")
        assert await row_counts(api.db) == before
        assert (await api.request("GET", "/healthz", user=None)).status == 200


async def test_a_template_campaign_must_render_when_stored(api: Harness) -> None:
    """Today a template whose parameters nest deeply is stored, and only fails when
    it is rendered, after its recipients were marked `sending`."""
    with trio.fail_after(60):
        account = await api.make_account()
        await api.make_contacts(2)
        base = CAMPAIGN | {"accountId": account, "messageType": "template"}

        def content(*components: Any) -> dict[str, Any]:
            return {"name": "launch", "language": "en_US", "components": list(components)}

        body = {"type": "body", "parameters": [{"type": "text", "text": "Hi {{firstName}}"}]}
        refused: list[tuple[dict[str, Any], str, str]] = [
            (
                content({"type": "body", "parameters": [{"type": "text", "deep": nested(500)}]}),
                "messageContent.components",
                "nested deeper than 32 levels",
            ),
            (content("body"), "messageContent.components[0]", "expected an object"),
            (content({"parameters": []}), "messageContent.components[0].type", "is required"),
            (
                content({"type": "body", "parameters": [{"type": "text", "text": 5}]}),
                "messageContent.components[0].parameters[0].text",
                "expected a string",
            ),
            (
                content({"type": "body", "parameters": ["x"]}),
                "messageContent.components[0].parameters[0]",
                "expected an object",
            ),
        ]
        for message_content, field, rule in refused:
            reply = await api.request(
                "POST", "/api/v1/campaigns", base | {"messageContent": message_content}
            )
            got = assert_error(reply, 400, "validation_failed", field)
            assert got.startswith(f"{field}: {rule}"), got
        assert assert_ok(await api.request("GET", "/api/v1/campaigns")) == []

        # A renderable template is stored as given, and PATCH checks the same rules.
        created = assert_ok(
            await api.request(
                "POST", "/api/v1/campaigns", base | {"messageContent": content(body)}
            ),
            201,
        )
        assert created["message_content"]["components"] == [body]
        key = created["id"]
        for message_content, field, rule in refused:
            reply = await api.request(
                "PATCH", f"/api/v1/campaigns/{key}", {"messageContent": message_content}
            )
            got = assert_error(reply, 400, "validation_failed", field)
            assert got.startswith(f"{field}: {rule}"), got
        stored = assert_ok(await api.request("GET", f"/api/v1/campaigns/{key}"))
        assert stored["message_content"]["components"] == [body]
        assert stored["updated_at"] == created["updated_at"]

        # ... and it is sent, rendered per recipient.
        async with api.engine.broadcaster.subscribe() as events:
            assert_ok(await api.request("POST", f"/api/v1/campaigns/{key}/start"))
            done = await _next_event(events, "campaign:completed", key)
        assert done.payload["campaign"]["stats"]["sent"] == 2
        texts = sorted(
            s.message.payload["components"][0]["parameters"][0]["text"] for s in api.gateway.sends
        )
        assert texts == ["Hi First0", "Hi First1"]


async def test_account_api_url_must_start_with_an_allowed_prefix(api: Harness) -> None:
    with trio.fail_after(30):
        allowed = api.settings.whatsapp.api_url  # the only one by default
        base = {"name": "Main", "phoneNumberId": "PN1", "accessToken": "t"}
        for url in (
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:5432",
            "https://graph.facebook.com.evil.example/v21.0",
            "https://graph.facebook.com/v20.0",
        ):
            message = assert_error(
                await api.request("POST", "/api/v1/accounts", base | {"apiUrl": url}),
                400,
                "validation_failed",
                "apiUrl",
            )
            assert message == f"apiUrl: must start with one of {allowed}"
        assert assert_ok(await api.request("GET", "/api/v1/accounts")) == []
        created = assert_ok(
            await api.request("POST", "/api/v1/accounts", base | {"apiUrl": f"{allowed}/"}), 201
        )
        assert created["api_url"] == f"{allowed}/"
        key = created["id"]
        assert_error(
            await api.request("PATCH", f"/api/v1/accounts/{key}", {"apiUrl": "http://10.0.0.1/"}),
            400,
            "validation_failed",
            "apiUrl",
        )
        unchanged = assert_ok(await api.request("GET", f"/api/v1/accounts/{key}"))
        assert unchanged["api_url"] == f"{allowed}/"
        # No apiUrl: the configured one is used.
        assert (
            assert_ok(await api.request("PATCH", f"/api/v1/accounts/{key}", {"apiUrl": None}))[
                "api_url"
            ]
            is None
        )


async def test_allowed_api_urls_are_prefixes_of_one_host(
    db: Database, gateway: ScriptedGateway
) -> None:
    settings = api_settings(
        CAMPAIGN_ENGINE_WHATSAPP_ALLOWED_API_URLS="http://127.0.0.1:, https://graph.facebook.com/"
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            harness: Harness = await nursery.start(open_harness, db, settings, gateway)
            base = {"name": "Main", "phoneNumberId": "PN1", "accessToken": "t"}
            for url in ("http://127.0.0.1:8081/v21.0", "https://graph.facebook.com/v22.0"):
                reply = await harness.request("POST", "/api/v1/accounts", base | {"apiUrl": url})
                assert assert_ok(reply, 201)["api_url"] == url
            # Starts with an allowed prefix, but names another host.
            for url in ("http://127.0.0.1:80@evil.example/", "http://127.0.0.1:@10.0.0.1/"):
                message = assert_error(
                    await harness.request("POST", "/api/v1/accounts", base | {"apiUrl": url}),
                    400,
                    "validation_failed",
                    "apiUrl",
                )
                assert message == (
                    "apiUrl: must start with one of http://127.0.0.1:, https://graph.facebook.com/"
                )
            nursery.cancel_scope.cancel()


async def test_metrics_carry_no_tenant_identifiers(api: Harness) -> None:
    with trio.fail_after(60):
        account = await api.make_account()
        await api.make_contacts(4)
        async with api.engine.broadcaster.subscribe() as events:
            campaign = await api.make_campaign(account, scheduleType="now")
            await _next_event(events, "campaign:completed", campaign["id"])
        text = (await api.request("GET", "/metrics", user=None)).body.decode()
        for identifier in (account, campaign["id"], "user-1", "PN1"):
            assert identifier not in text
        samples = dict(
            line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
        )
        assert samples["campaign_engine_messages_sent_total"] == "4.0"
        assert samples['campaign_engine_campaigns{status="completed"}'] == "1.0"
        assert samples["campaign_engine_accounts_sending"] == "0.0"
        assert not [name for name in samples if "account=" in name]


async def test_contact_fields_have_size_limits(api: Harness) -> None:
    with trio.fail_after(30):
        phone = "+14155550100"
        too_big: list[tuple[dict[str, Any], str, str]] = [
            ({"attributes": {"k" * 65: "v"}}, "attributes", "keys of 1 to 64 characters"),
            ({"attributes": {"": "v"}}, "attributes", "keys of 1 to 64 characters"),
            ({"attributes": {"k": "v" * 1025}}, "attributes", "values of at most 1024 characters"),
            (
                {"attributes": {f"k{i}": "v" for i in range(101)}},
                "attributes",
                "at most 100 entries",
            ),
            ({"tags": [f"t{i}" for i in range(51)]}, "tags", "at most 50 items"),
            ({"tags": ["t" * 65]}, "tags[0]", "at most 64 characters"),
            ({"firstName": "f" * 101}, "firstName", "at most 100 characters"),
            ({"lastName": "l" * 101}, "lastName", "at most 100 characters"),
            ({"company": "c" * 201}, "company", "at most 200 characters"),
            ({"email": "e" * 255}, "email", "at most 254 characters"),
            ({"firstName": "a\u0000b"}, "firstName", "must not contain NUL characters"),
            ({"attributes": {"k": "a\u0000b"}}, "attributes.k", "must not contain NUL characters"),
            ({"tags": ["a\u0000b"]}, "tags[0]", "must not contain NUL characters"),
        ]

        def code(rule: str) -> str:
            return "invalid_value" if "NUL" in rule else "validation_failed"

        for fields, field, rule in too_big:
            message = assert_error(
                await api.request("POST", "/api/v1/contacts", {"phone": phone} | fields),
                400,
                code(rule),
                field,
            )
            assert rule in message, (fields, message)
        # In a batch, only the entry over a limit is rejected, with the same reason.
        batch = [{"phone": f"+1415555{i:04d}"} | fields for i, (fields, _, _) in enumerate(too_big)]
        batch.append({"phone": "+14155559999", "attributes": {"k" * 64: "v" * 1024}})
        result = assert_ok(await api.request("POST", "/api/v1/contacts", {"contacts": batch}))
        assert (result["created"], result["updated"]) == (1, 0)
        reasons = [r["reason"] for r in result["rejected"]]
        assert [r["index"] for r in result["rejected"]] == list(range(len(too_big)))
        for reason, (_, field, rule) in zip(reasons, too_big, strict=True):
            assert reason.startswith(f"{field}: ") and rule in reason, reason
        # PATCH follows the same rules.
        key = assert_ok(await api.request("GET", "/api/v1/contacts"))[0]["id"]
        for fields, field, rule in too_big:
            message = assert_error(
                await api.request("PATCH", f"/api/v1/contacts/{key}", fields),
                400,
                code(rule),
                field,
            )
            assert rule in message, (fields, message)


async def test_duplicate_phones_in_one_batch_are_applied_in_order(api: Harness) -> None:
    with trio.fail_after(30):
        await api.request("POST", "/api/v1/contacts", {"phone": "+14155550300", "firstName": "A"})
        batch = [
            {"phone": "+14155550100", "firstName": "Old", "tags": ["x"]},  # created
            {"phone": "+14155550200", "firstName": "Two"},  # created
            {"phone": "+14155550100", "firstName": "New"},  # updates the first
            {"phone": "+14155550200", "tags": [7]},  # invalid: not stored
            {"phone": "+14155550300", "firstName": "B"},  # updates an existing contact
            {"phone": "+14155550300", "firstName": "C"},  # ... and again
        ]
        result = assert_ok(await api.request("POST", "/api/v1/contacts", {"contacts": batch}))
        assert (result["created"], result["updated"]) == (2, 3)
        assert [r["index"] for r in result["rejected"]] == [3]
        by_phone = {c["phone"]: c for c in assert_ok(await api.request("GET", "/api/v1/contacts"))}
        assert (by_phone["+14155550100"]["first_name"], by_phone["+14155550100"]["tags"]) == (
            "New",
            [],
        )
        assert by_phone["+14155550200"]["first_name"] == "Two"
        assert by_phone["+14155550300"]["first_name"] == "C"
        assert len(by_phone) == 3


async def test_the_engine_refuses_to_store_a_message_it_cannot_render(api: Harness) -> None:
    """The same rule for every caller of the engine's interface, not only the HTTP API."""
    with trio.fail_after(30):
        account = await api.make_account()
        unrenderable = CampaignInput(
            account_id=account,
            name="Raw",
            message_type="text",
            message_content={"body": "not a string"},
            audience_type="all",
            audience_config={},
            schedule_type="manual",
            throttle_config={"messagesPerMinute": 60, "batchSize": 10, "delayBetweenBatches": 0},
        )
        with pytest.raises(InvalidInput) as refused:
            await api.engine.campaigns.create(USER, unrenderable)
        assert refused.value.field == "messageContent"
        assert "must be a string" in refused.value.rule
        deep = msgspec.structs.replace(
            unrenderable, message_type="template", message_content=nested(40)
        )
        with pytest.raises(InvalidInput, match="nested deeper than 32 levels"):
            await api.engine.campaigns.create(USER, deep)
        assert assert_ok(await api.request("GET", "/api/v1/campaigns")) == []

        draft = await api.make_campaign(account)
        with pytest.raises(InvalidInput):
            await api.engine.campaigns.update(
                USER, draft["id"], lambda _current: {"message_content": {"body": 1}}
            )
        stored = assert_ok(await api.request("GET", f"/api/v1/campaigns/{draft['id']}"))
        assert stored["message_content"] == draft["message_content"]


async def test_account_ids_and_tokens_that_would_rewrite_a_request_are_refused(
    api: Harness,
) -> None:
    # The phone number id goes into each send's path, the token into a header line.
    with trio.fail_after(30):
        base = {"name": "Main", "phoneNumberId": "PN1", "accessToken": "t"}
        for field, value in (
            ("phoneNumberId", "../../me"),
            ("phoneNumberId", "PN1/messages?x="),
            ("phoneNumberId", "PN 1"),
            ("accessToken", "token\r\nX-Injected: 1"),
            ("accessToken", "two words"),
        ):
            assert_error(
                await api.request("POST", "/api/v1/accounts", base | {field: value}),
                400,
                "validation_failed",
                field,
            )
        assert assert_ok(await api.request("GET", "/api/v1/accounts")) == []
        key = assert_ok(await api.request("POST", "/api/v1/accounts", base), 201)["id"]
        assert_error(
            await api.request("PATCH", f"/api/v1/accounts/{key}", {"accessToken": "a\nb"}),
            400,
            "validation_failed",
            "accessToken",
        )
