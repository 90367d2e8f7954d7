"""Campaign variables: which names a message uses, unknown ones refused when the
campaign is created or edited, recipients that lack one refused at start
(`missing_variable`) unless the campaign allows it, and raw braces never sent."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from engine.core import variables
from engine.core.variables import Placeholder
from engine.messages import CampaignEvent
from tests.api_helpers import Harness, api, gateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def template(*texts: str) -> dict[str, Any]:
    parameters = [{"type": "text", "text": text} for text in texts]
    return {
        "name": "offer",
        "language": "en",
        "components": [{"type": "header"}, {"type": "body", "parameters": parameters}],
    }


def test_placeholders_name_their_field_once_in_reading_order() -> None:
    text = "Hi {{ firstName }}, {{city}} and {{city}}; {{a b}} and {{ }} are plain text"
    assert variables.placeholders("text", text) == [
        Placeholder("messageContent", "firstName"),
        Placeholder("messageContent", "city"),
    ]
    assert variables.placeholders("template", template("x", "{{tier}} {{firstName}}")) == [
        Placeholder("messageContent.components[1].parameters[1].text", "tier"),
        Placeholder("messageContent.components[1].parameters[1].text", "firstName"),
    ]
    assert variables.placeholders("template", "not an object") == []
    found = variables.placeholders("image", "{{company}} {{promo}} {{tier}}")
    assert variables.needing_a_contact(found, {"promo"}) == ["tier"]
    # An empty value is no value, as the renderer reads it; a default covers it.
    assert variables.missing(found, {"company": "", "tier": "gold"}, {"promo"}) == ["company"]


async def add_contacts(api: Harness, contacts: list[dict[str, Any]]) -> None:
    reply = await api.request("POST", "/api/v1/contacts", {"contacts": contacts})
    assert reply.status == 200 and reply.data["rejected"] == [], reply.body


async def test_a_variable_no_contact_has_is_refused_at_create_and_edit(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        body = {
            "accountId": account,
            "name": "Cities",
            "messageType": "text",
            "messageContent": "Hi {{firstName}} in {{city}}",
            "audienceType": "all",
            "scheduleType": "manual",
        }
        reply = await api.request("POST", "/api/v1/campaigns", body)
        assert reply.status == 400
        error = reply.json()
        assert error["error"] == {"code": "validation_failed", "field": "messageContent"}
        assert "unknown variable {{city}}" in error["message"]
        assert (await api.request("GET", "/api/v1/campaigns")).data == []

        # A default covers it; so does one contact anywhere with the attribute.
        with_default = body | {"templateVariables": {"city": "your city"}}
        assert (await api.request("POST", "/api/v1/campaigns", with_default)).status == 201
        await add_contacts(api, [{"phone": "+15550000001", "attributes": {"city": "Porto"}}])
        created = await api.make_campaign(account, **body)

        tpl = body | {"messageType": "template", "messageContent": template("{{firstName}}")}
        tpl["messageContent"]["components"][1]["parameters"].append(
            {"type": "text", "text": "tier {{tier}}"}
        )
        reply = await api.request("POST", "/api/v1/campaigns", tpl)
        assert reply.status == 400
        field = "messageContent.components[1].parameters[1].text"
        assert reply.json()["error"]["field"] == field
        assert "{{tier}}" in reply.json()["message"]

        # An edit is checked the same way, and writes nothing when refused.
        path = f"/api/v1/campaigns/{created['id']}"
        reply = await api.request("PATCH", path, {"messageContent": "Hi {{nickname}}"})
        assert reply.status == 400 and "{{nickname}}" in reply.json()["message"]
        reply = await api.request("PATCH", path, {"templateVariables": {"other": "x"}})
        assert reply.status == 200  # {{city}} is still some contact's attribute
        assert (await api.request("GET", path)).data["message_content"] == body["messageContent"]


async def wait_completed(events: trio.MemoryReceiveChannel[Any], campaign_id: str) -> None:
    async for event in events:
        if (
            isinstance(event, CampaignEvent)
            and event.name == "campaign:completed"
            and event.payload["campaignId"] == campaign_id
        ):
            return


async def test_start_refuses_a_variable_recipients_lack_unless_allowed(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        await add_contacts(
            api,
            [
                {"phone": "+15550000001", "firstName": "Ana", "attributes": {"city": "Porto"}},
                {"phone": "+15550000002", "firstName": "Bo", "attributes": {"city": ""}},
                {"phone": "+15550000003", "attributes": {"tier": "gold"}},
            ],
        )
        campaign = await api.make_campaign(
            account,
            messageContent="Hi {{firstName}} in {{city}} {{tier}}",
            templateVariables={"tier": "member"},
        )
        path = f"/api/v1/campaigns/{campaign['id']}"
        reply = await api.request("POST", f"{path}/start")
        assert reply.status == 400
        refused = reply.json()
        assert refused["error"]["code"] == "missing_variable"
        # An empty attribute is missing too; {{tier}} has a default.
        assert "{{firstName}} is missing for 1 recipient;" in refused["message"]
        assert "{{city}} is missing for 2 recipients" in refused["message"]
        assert "tier" not in refused["message"]
        after = (await api.request("GET", path)).data
        assert (after["status"], after["total_recipients"]) == ("draft", 0)
        assert api.gateway.sends == []

        # Scheduled at create, the campaign leaves draft at once: refused there.
        reply = await api.request(
            "POST",
            "/api/v1/campaigns",
            {
                "accountId": account,
                "name": "Now",
                "messageType": "text",
                "messageContent": "Hi {{city}}",
                "audienceType": "all",
                "scheduleType": "now",
            },
        )
        assert reply.status == 400 and reply.json()["error"]["code"] == "missing_variable"
        assert len((await api.request("GET", "/api/v1/campaigns")).data) == 1

        reply = await api.request("PATCH", path, {"allowMissingVariables": True})
        assert reply.status == 200 and reply.data["allow_missing_variables"] is True
        async with api.engine.broadcaster.subscribe() as events:
            assert (await api.request("POST", f"{path}/start")).status == 200
            await wait_completed(events, campaign["id"])
        bodies = sorted(send.message.payload["body"] for send in api.gateway.sends)
        assert bodies == ["Hi  in  gold", "Hi Ana in Porto member", "Hi Bo in  member"]
        assert not any("{{" in body for body in bodies)  # raw braces never reach WhatsApp


async def test_an_edit_once_recipients_are_fixed_is_checked_against_them(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        await add_contacts(
            api,
            [
                {"phone": "+15550000001", "firstName": "Ana", "attributes": {"city": "Porto"}},
                {"phone": "+15550000002", "firstName": "Bo"},
            ],
        )
        later = await api.make_campaign(
            account, scheduleType="scheduled", scheduledAt="2099-01-01T00:00:00Z"
        )
        assert (later["status"], later["total_recipients"]) == ("scheduled", 2)
        path = f"/api/v1/campaigns/{later['id']}"
        reply = await api.request("PATCH", path, {"messageContent": "Hi {{firstName}} of {{city}}"})
        assert reply.status == 400
        assert reply.json()["error"]["code"] == "missing_variable"
        assert "{{city}} is missing for 1 recipient," in reply.json()["message"]
        assert (await api.request("GET", path)).data["message_content"] == "Hi {{firstName}}"
        with_default = {
            "messageContent": "Hi {{firstName}} of {{city}}",
            "templateVariables": {"city": "here"},
        }
        assert (await api.request("PATCH", path, with_default)).status == 200
