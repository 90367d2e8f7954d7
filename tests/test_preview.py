"""Preview and test send: the preview is the body the sender writes (the same
renderer and body builder), a missing variable is named, and a test send goes out
once through the campaign's account and number budget, is no recipient, and moves
no stats."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from engine.core.callback_reference import CallbackReferences
from engine.gateway import OutgoingMessage, SendResult
from engine.messages import CampaignEvent
from engine.transport.cloud_api import encode_message
from tests.api_helpers import OTHER_USER, Harness, api, gateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

TEXT = "Hi {{firstName}} in {{city}}"


async def setup(api: Harness) -> tuple[str, dict[str, Any], str]:
    """An account, two contacts (one with a city) and a draft: (account, campaign, Ana's id)."""
    account = await api.make_account()
    contacts = [
        {"phone": "+15550000001", "firstName": "Ana", "attributes": {"city": "Porto"}},
        {"phone": "+15550000002", "firstName": "Bo", "attributes": {"city": "Faro"}},
    ]
    assert (await api.request("POST", "/api/v1/contacts", {"contacts": contacts})).status == 200
    listed = (await api.request("GET", "/api/v1/contacts")).data
    ana = next(c["id"] for c in listed if c["phone"] == "+15550000001")
    campaign = await api.make_campaign(account, messageContent=TEXT)
    return account, campaign, ana


async def test_the_preview_is_the_body_the_sender_writes(api: Harness) -> None:
    with trio.fail_after(30):
        _, campaign, ana = await setup(api)
        path = f"/api/v1/campaigns/{campaign['id']}"
        reply = await api.request("POST", f"{path}/preview", {"contactId": ana})
        assert reply.status == 200, reply.body
        preview = reply.data["body"]
        assert preview == {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "+15550000001",
            "type": "text",
            "text": {"body": "Hi Ana in Porto", "preview_url": False},
        }
        made_up = {"variables": {"firstName": "Zed", "city": "Braga"}}
        reply = await api.request("POST", f"{path}/preview", made_up)
        assert reply.data["body"]["text"]["body"] == "Hi Zed in Braga"

        async with api.engine.broadcaster.subscribe() as events:
            assert (await api.request("POST", f"{path}/start")).status == 200
            async for event in events:
                if isinstance(event, CampaignEvent) and event.name == "campaign:completed":
                    break
        sent = next(s.message for s in api.gateway.sends if s.message.to == "+15550000001")
        references = CallbackReferences(b"k" * 32)
        written = msgspec.json.decode(encode_message(sent, references))
        # What went on the wire, less the per-recipient reference, is the preview.
        assert written.pop("biz_opaque_callback_data") == references.issue(sent.recipient_id)
        assert written == preview


async def test_a_preview_names_the_missing_variable(api: Harness) -> None:
    with trio.fail_after(30):
        _, campaign, ana = await setup(api)
        path = f"/api/v1/campaigns/{campaign['id']}/preview"
        reply = await api.request("POST", path, {"variables": {"firstName": "Zed"}})
        assert reply.status == 400
        assert reply.json()["error"] == {"code": "missing_variable", "field": "messageContent"}
        assert reply.json()["message"].startswith("messageContent: {{city}} has no value")
        reply = await api.request("POST", path, {})  # no contact: defaults only
        assert reply.status == 400 and "{{firstName}}, {{city}} have" in reply.json()["message"]

        both = {"contactId": ana, "variables": {"city": "x"}}
        reply = await api.request("POST", path, both)
        assert (reply.status, reply.json()["error"]["field"]) == (400, "variables")
        stranger = {"contactId": "00000000-0000-4000-8000-000000000000"}
        reply = await api.request("POST", path, stranger)
        assert (reply.status, reply.json()["error"]["field"]) == (400, "contactId")
        reply = await api.request("POST", path, {"contactId": ana}, user=OTHER_USER)
        assert reply.status == 404

        # Allowed, the missing variable renders empty, braces and all gone.
        edit = {"allowMissingVariables": True}
        assert (await api.request("PATCH", path.removesuffix("/preview"), edit)).status == 200
        reply = await api.request("POST", path, {"variables": {"firstName": "Zed"}})
        assert reply.data["body"]["text"]["body"] == "Hi Zed in "


def refuse_some(message: OutgoingMessage, attempt: int) -> SendResult | None:
    if message.to == "+15559990001":
        return SendResult(
            ok=False, http_status=400, error_code=131026, error_message="Message undeliverable"
        )
    if message.to == "+15559990002":
        return SendResult(ok=False, http_status=429, error_code=130429, error_message="slow")
    return None


async def test_a_test_send_goes_once_and_is_no_recipient(api: Harness) -> None:
    with trio.fail_after(30):
        account, campaign, ana = await setup(api)
        api.gateway.script = refuse_some
        path = f"/api/v1/campaigns/{campaign['id']}"
        before = (await api.request("GET", path)).data

        reply = await api.request(
            "POST", f"{path}/test", {"phone": "+15559990000"} | {"contactId": ana}
        )
        assert reply.status == 200, reply.body
        assert reply.json()["message"] == "Test message sent"
        assert reply.data == {
            "to": "+15559990000",
            "sent": True,
            "provider_message_id": "wamid.fake.1",
            "error": None,
        }
        [send] = api.gateway.sends
        assert (send.endpoint.phone_number_id, send.message.to) == ("PN1", "+15559990000")
        assert send.message.payload["body"] == "Hi Ana in Porto"

        # WhatsApp's refusal comes back classified, as the engine reads it.
        reply = await api.request(
            "POST",
            f"{path}/test",
            {"phone": "+15559990001"} | {"variables": {"firstName": "Zed", "city": "Braga"}},
        )
        assert reply.status == 200
        assert reply.data["sent"] is False
        assert reply.data["error"] == {
            "code": "131026",
            "class": "permanent",
            "message": "HTTP 400: Message undeliverable",
        }

        # A slow-down answer slows the number's budget: the next test send has no turn.
        throttled = {"phone": "+15559990002", "contactId": ana}
        reply = await api.request("POST", f"{path}/test", throttled)
        assert reply.data["error"]["class"] == "throttled"
        reply = await api.request(
            "POST", f"{path}/test", {"phone": "+15559990000"} | {"contactId": ana}
        )
        assert (reply.status, reply.json()["error"]["code"]) == (429, "account_busy")
        assert len(api.gateway.sends) == 3

        # Nothing is sent for a missing variable, a bad number, or a disconnected account.
        reply = await api.request("POST", f"{path}/test", {"phone": "+15559990000"})
        assert reply.json()["error"]["code"] == "missing_variable"
        reply = await api.request("POST", f"{path}/test", {"phone": "5559990000"})
        assert (reply.status, reply.json()["error"]["field"]) == (400, "phone")
        off = {"status": "disconnected"}
        assert (await api.request("PATCH", f"/api/v1/accounts/{account}", off)).status == 200
        reply = await api.request(
            "POST", f"{path}/test", {"phone": "+15559990003"} | {"contactId": ana}
        )
        assert (reply.status, reply.json()["error"]["code"]) == (400, "account_not_connected")
        assert len(api.gateway.sends) == 3

        after = (await api.request("GET", path)).data
        for field in ("status", "total_recipients", "stats", "metrics", "progress"):
            assert after[field] == before[field], field
        recipients = await api.request("GET", f"{path}/recipients")
        assert recipients.data == []


async def test_the_openapi_document_describes_preview_test_and_retarget(api: Harness) -> None:
    with trio.fail_after(20):
        doc = (await api.request("GET", "/openapi.json", user=None)).json()
        schemas = doc["components"]["schemas"]
        for route, model, required in (
            ("preview", "CampaignPreview", set()),
            ("test", "CampaignTestSend", {"phone"}),
            ("retarget", "CampaignRetarget", {"audience"}),
        ):
            operation = doc["paths"][f"/api/v1/campaigns/{{campaign_id}}/{route}"]["post"]
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert body == {"$ref": f"#/components/schemas/{model}"}
            assert set(schemas[model].get("required", [])) == required
            assert operation["description"]
        audience = schemas["CampaignRetarget"]["properties"]["audience"]
        assert audience["enum"] == ["failed", "not_delivered", "not_read", "not_replied"]


async def test_a_test_send_repeated_under_its_idempotency_key_is_not_sent_again(
    api: Harness,
) -> None:
    with trio.fail_after(30):
        _, campaign, ana = await setup(api)
        path = f"/api/v1/campaigns/{campaign['id']}/test"
        body = {"phone": "+15559990000", "contactId": ana}
        key = {"Idempotency-Key": "test-send-1"}
        first = await api.request("POST", path, body, headers=key)
        again = await api.request("POST", path, body, headers=key)
        assert first.status == again.status == 200
        assert again.data == first.data and first.data["sent"] is True
        assert len(api.gateway.sends) == 1
