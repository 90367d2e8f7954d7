"""The account event log over HTTP: signed signal webhooks through the webhook door,
`GET /accounts/:id/events` paged newest first and scoped to the owner, and the
account's `businessAccountId` they are matched by."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from engine.messages import CampaignEvent
from tests.api_helpers import OTHER_USER, Harness, api, gateway
from tests.test_api_webhooks import post

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

WABA = "102290129340398"


def signals(*changes: tuple[str, Any]) -> bytes:
    entry = {"id": WABA, "time": 1, "changes": [{"field": f, "value": v} for f, v in changes]}
    return msgspec.json.encode({"object": "whatsapp_business_account", "entry": [entry]})


def template(event: str) -> tuple[str, Any]:
    return (
        "message_template_status_update",
        {
            "event": event,
            "message_template_id": 77,
            "message_template_name": "promo",
            "message_template_language": "en_US",
            "reason": "NONE",
        },
    )


async def wait_for(events: Any, name: str, campaign_id: str) -> dict[str, Any]:
    async for event in events:
        if (
            isinstance(event, CampaignEvent)
            and event.name == name
            and event.payload["campaignId"] == campaign_id
        ):
            payload: dict[str, Any] = event.payload
            return payload
    raise AssertionError("broadcaster closed")


async def test_each_signal_is_in_the_account_event_log(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account(businessAccountId=WABA)
        unrelated = await api.make_account(businessAccountId="42", phoneNumberId="PN2")
        await api.make_contacts(2)
        async with api.engine.broadcaster.subscribe() as events:
            campaign = await api.make_campaign(
                account,
                messageType="template",
                messageContent={"name": "promo", "language": "en_US"},
                scheduleType="scheduled",
                scheduledAt="2099-01-01T00:00:00Z",
            )
            first = signals(
                ("phone_number_quality_update", {"event": "FLAGGED", "current_limit": "TIER_1K"}),
                ("account_update", {"event": "ACCOUNT_VIOLATION", "phone_number": "1555"}),
                ("account_update", {"event": 7}),  # malformed: refused alone
                template("PAUSED"),
            )
            reply = await post(api, first)
            assert reply.status == 200, reply.body
            paused = await wait_for(events, "campaign:paused", campaign["id"])
            assert (await post(api, signals(template("APPROVED")))).status == 200
            await wait_for(events, "campaign:resumed", campaign["id"])

        page1 = await api.request("GET", f"/api/v1/accounts/{account}/events?limit=2")
        assert page1.status == 200, page1.body
        cursor = page1.json()["pagination"]["next_cursor"]
        page2 = await api.request(
            "GET", f"/api/v1/accounts/{account}/events?limit=2&cursor={cursor}"
        )
        after = page2.json()["pagination"]["next_cursor"]
        page3 = await api.request(
            "GET", f"/api/v1/accounts/{account}/events?limit=2&cursor={after}"
        )
        rest = await api.request("GET", f"/api/v1/accounts/{unrelated}/events")
        foreign = await api.request("GET", f"/api/v1/accounts/{account}/events", user=OTHER_USER)
        not_an_id = await api.request("GET", "/api/v1/accounts/42/events")
        bad_cursor = await api.request("GET", f"/api/v1/accounts/{account}/events?cursor=x")
        bad_limit = await api.request("GET", f"/api/v1/accounts/{account}/events?limit=0")
        shown = await api.request("GET", f"/api/v1/campaigns/{campaign['id']}")
        rated = await api.request("GET", f"/api/v1/accounts/{account}")

    assert paused["reason"] == "WhatsApp paused the template promo (en_US)"
    logged = page1.data + page2.data
    assert [(e["kind"], e["event"]) for e in logged] == [
        ("message_template_status_update", "APPROVED"),
        ("message_template_status_update", "PAUSED"),
        ("account_update", "ACCOUNT_VIOLATION"),
        ("phone_number_quality_update", "FLAGGED"),
    ]
    assert page3.status == 200 and page3.data == []
    approved, template_paused, violation, quality = logged
    assert approved["resumed_campaigns"] == [campaign["id"]]
    assert template_paused["paused_campaigns"] == [campaign["id"]]
    assert violation["paused_campaigns"] == [] and violation["content"]["phone_number"] == "1555"
    assert quality["content"] == {"event": "FLAGGED", "current_limit": "TIER_1K"}
    assert all(e["account_id"] == account and e["received_at"].endswith("Z") for e in logged)
    assert rest.status == 200 and rest.data == []
    for reply in (foreign, not_an_id):
        assert reply.status == 404 and reply.json()["error"]["code"] == "not_found"
    assert bad_cursor.status == 400 and bad_cursor.json()["error"]["field"] == "cursor"
    assert bad_limit.status == 400 and bad_limit.json()["error"]["field"] == "limit"
    # Resumed: scheduled again, to start now.
    assert shown.data["status"] in ("scheduled", "running", "completed")
    assert shown.data["pause_reason"] is None
    # The quality update's tier lowered the account's unset messaging limit.
    assert rated.data["messaging_limit"] == 1000
    webhooks = api.engine.statistics().webhooks
    assert (webhooks.refused, webhooks.signals_logged) == (1, 4)


async def test_an_account_keeps_its_business_account_id(api: Harness) -> None:
    with trio.fail_after(20):
        account = await api.make_account(businessAccountId=WABA)
        shown = await api.request("GET", f"/api/v1/accounts/{account}")
        cleared = await api.request(
            "PATCH", f"/api/v1/accounts/{account}", {"businessAccountId": None}
        )
        bad = await api.request(
            "POST",
            "/api/v1/accounts",
            {"name": "x", "phoneNumberId": "PN", "accessToken": "t", "businessAccountId": "a b"},
        )
        plain = await api.make_account()
        plain_shown = await api.request("GET", f"/api/v1/accounts/{plain}")
    assert shown.data["business_account_id"] == WABA
    assert cleared.data["business_account_id"] is None
    assert bad.status == 400 and bad.json()["error"]["field"] == "businessAccountId"
    assert plain_shown.data["business_account_id"] is None
