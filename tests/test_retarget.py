"""Retarget: after status webhooks, each audience is the source's recipients in that
state, frozen into a new draft at creation, without opted-out contacts; the draft
sends only to them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from engine.messages import CampaignEvent
from tests.api_helpers import Harness, api, gateway
from tests.test_api_webhooks import T0, notification, post, reply_to, stats_event, status

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def phone(i: int) -> str:
    return f"+1555{i:07d}"  # as Harness.make_contacts numbers them


async def completed(api: Harness, events: Any, campaign_id: str) -> None:
    async for event in events:
        if (
            isinstance(event, CampaignEvent)
            and event.name == "campaign:completed"
            and event.payload["campaignId"] == campaign_id
        ):
            return


async def contact_ids(api: Harness) -> dict[str, str]:
    return {c["phone"]: c["id"] for c in (await api.request("GET", "/api/v1/contacts")).data}


async def phones_of(api: Harness, campaign_id: str) -> list[str]:
    reply = await api.request("GET", f"/api/v1/campaigns/{campaign_id}/recipients")
    return sorted(r["phone"] for r in reply.data)


async def test_retarget_audiences_after_webhooks(api: Harness) -> None:
    with trio.fail_after(40):
        account = await api.make_account()
        await api.make_contacts(7)
        draft = await api.make_campaign(account)
        reply = await api.request(
            "POST", f"/api/v1/campaigns/{draft['id']}/retarget", {"audience": "not_read"}
        )
        assert (reply.status, reply.json()["error"]["code"]) == (400, "campaign_not_started")

        async with api.engine.broadcaster.subscribe() as events:
            source = await api.make_campaign(account, scheduleType="now", name="Launch")
            await completed(api, events, source["id"])
        rows = await api.db.fetch(
            "SELECT phone, provider_message_id FROM campaign_recipients WHERE campaign_id = $1",
            source["id"],
        )
        wamid = {r["phone"]: r["provider_message_id"] for r in rows}
        w = [wamid[phone(i)] for i in range(7)]
        # 0 delivered; 1 read; 2 read and replied; 3 failed; 4 and 6 only sent;
        # 5 delivered and replied (no read receipt).
        facts = notification(
            [
                status(w[0], "delivered", T0 + 1),
                status(w[1], "read", T0 + 2),
                status(w[2], "read", T0 + 2),
                status(w[3], "failed", T0 + 3, errors=[{"code": 131026, "title": "x"}]),
                status(w[5], "delivered", T0 + 1),
            ],
            [reply_to(w[2], T0 + 5), reply_to(w[5], T0 + 6)],
        )
        async with api.engine.broadcaster.subscribe() as events:
            assert (await post(api, facts)).status == 200
            await stats_event(events, source["id"], delivered=4, read=2, replied=2, failed=1)

        ids = await contact_ids(api)
        opt_out = {"optedOut": True}
        reply = await api.request("PATCH", f"/api/v1/contacts/{ids[phone(6)]}", opt_out)
        assert reply.status == 200

        expected = {
            "not_delivered": [phone(4)],  # 6 opted out
            "not_read": [phone(0)],  # 5 replied: it was read
            "not_replied": [phone(0), phone(1)],
            "failed": [phone(3)],
        }
        path = f"/api/v1/campaigns/{source['id']}"
        drafts = {}
        for audience, phones in expected.items():
            reply = await api.request("POST", f"{path}/retarget", {"audience": audience})
            assert reply.status == 201, reply.body
            made = reply.data
            assert (made["status"], made["audience_type"]) == ("draft", "retarget")
            assert made["audience_config"] == {"campaignId": source["id"], "audience": audience}
            assert made["name"] == f"Launch (retarget: {audience.replace('_', ' ')})"
            assert made["total_recipients"] == len(phones)
            assert await phones_of(api, made["id"]) == phones, audience
            drafts[audience] = made

        reply = await api.request("POST", f"{path}/retarget", {"audience": "everyone"})
        assert (reply.status, reply.json()["error"]["field"]) == (400, "audience")
        frozen = f"/api/v1/campaigns/{drafts['failed']['id']}"
        reply = await api.request("PATCH", frozen, {"audienceType": "all"})
        assert (reply.status, reply.json()["error"]["code"]) == (400, "field_not_editable")
        copy = await api.request("POST", f"{frozen}/duplicate")
        assert copy.status == 201 and copy.data["total_recipients"] == 1
        assert await phones_of(api, copy.data["id"]) == [phone(3)]

        # A new message and name; the source is not changed by any of it.
        body = {
            "audience": "not_replied",
            "name": "Reminder",
            "messageContent": "Still interested, {{firstName}}?",
        }
        reply = await api.request("POST", f"{path}/retarget", body)
        assert reply.status == 201
        reminder = reply.data
        assert (reminder["name"], reminder["message_content"]) == (
            "Reminder",
            "Still interested, {{firstName}}?",
        )
        # A contact who opts out before the draft starts is not sent to.
        reply = await api.request("PATCH", f"/api/v1/contacts/{ids[phone(1)]}", opt_out)
        assert reply.status == 200
        sends_before = len(api.gateway.sends)
        async with api.engine.broadcaster.subscribe() as events:
            started = await api.request("POST", f"/api/v1/campaigns/{reminder['id']}/start")
            assert started.status == 200
            await completed(api, events, reminder["id"])
        sent = [s.message for s in api.gateway.sends[sends_before:]]
        assert [(m.to, m.payload["body"]) for m in sent] == [
            (phone(0), "Still interested, First0?")
        ]
        done = (await api.request("GET", f"/api/v1/campaigns/{reminder['id']}")).data
        assert (done["status"], done["total_recipients"], done["stats"]["sent"]) == (
            "completed",
            1,
            1,
        )
        assert done["stats"]["pending"] == 0
        unchanged = (await api.request("GET", path)).data
        assert (unchanged["total_recipients"], unchanged["stats"]["sent"]) == (7, 7)


async def test_a_retarget_message_is_checked_like_a_new_campaign(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        await api.make_contacts(1)
        async with api.engine.broadcaster.subscribe() as events:
            source = await api.make_campaign(account, scheduleType="now")
            await completed(api, events, source["id"])
        path = f"/api/v1/campaigns/{source['id']}/retarget"
        for content, field in (("Hi {{nickname}}", "messageContent"), ("   ", "messageContent")):
            body = {"audience": "not_delivered", "messageContent": content}
            reply = await api.request("POST", path, body)
            assert (reply.status, reply.json()["error"]["field"]) == (400, field), reply.body
        reply = await api.request("POST", path, {"audience": "not_delivered"})
        assert reply.status == 201 and reply.data["total_recipients"] == 1
        campaigns = (await api.request("GET", "/api/v1/campaigns")).data
        assert len(campaigns) == 2  # the source and the one accepted draft


async def test_a_retarget_draft_keeps_the_send_window(api: Harness) -> None:
    now = datetime.now(UTC)
    window = {
        "start": (now + timedelta(hours=2)).strftime("%H:%M"),
        "end": (now + timedelta(hours=3)).strftime("%H:%M"),
        "timezone": "Europe/Berlin",
    }
    with trio.fail_after(30):
        account = await api.make_account()
        await api.make_contacts(1)
        source = await api.make_campaign(account, scheduleType="now", sendWindow=window)
        path = f"/api/v1/campaigns/{source['id']}/retarget"
        reply = await api.request("POST", path, {"audience": "not_delivered"})
    assert reply.status == 201, reply.body
    assert reply.data["send_window"] == source["send_window"] == window
