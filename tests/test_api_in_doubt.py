"""`in_doubt` on the campaign object, and `POST /api/v1/campaigns/:id/in-doubt`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio

from tests.api_helpers import OTHER_USER, Harness, api, gateway

__all__ = ["api", "gateway"]


async def paused_campaign_with_sends_in_doubt(api: Harness, in_doubt: int) -> dict[str, Any]:
    """A paused campaign of 5 recipients, `in_doubt` of them sent and never answered
    (what a daemon that died mid-request leaves)."""
    account = await api.make_account()
    await api.make_contacts(5)
    campaign = await api.make_campaign(account)
    db = api.db
    await db.execute(
        "UPDATE campaigns SET status = 'paused', recipients_frozen = true WHERE id = $1",
        campaign["id"],
    )
    await db.execute(
        """INSERT INTO campaign_recipients (campaign_id, phone, variables)
           SELECT $1, '+1555000000' || n, '{}' FROM generate_series(1, 5) n""",
        campaign["id"],
    )
    await db.execute("UPDATE campaigns SET total_recipients = 5 WHERE id = $1", campaign["id"])
    await db.execute(
        """UPDATE campaign_recipients SET status = 'in_doubt', attempts = 1,
               sending_at = now() - make_interval(secs => id - min_id)
           FROM (SELECT min(id) AS min_id FROM campaign_recipients WHERE campaign_id = $1) m
           WHERE campaign_id = $1 AND id < m.min_id + $2""",
        campaign["id"],
        in_doubt,
    )
    return campaign


async def get(api: Harness, campaign_id: str) -> dict[str, Any]:
    reply = await api.request("GET", f"/api/v1/campaigns/{campaign_id}")
    assert reply.status == 200, reply.body
    data: dict[str, Any] = reply.data
    return data


async def test_the_campaign_shows_its_sends_in_doubt_and_when_they_resolve(api: Harness) -> None:
    with trio.fail_after(30):
        campaign = await paused_campaign_with_sends_in_doubt(api, 3)
        shown = await get(api, campaign["id"])
        last_sent = await api.db.fetchval(
            "SELECT max(sending_at) FROM campaign_recipients WHERE campaign_id = $1",
            campaign["id"],
        )
    timeout = timedelta(seconds=api.settings.delivery.in_doubt_timeout)
    expected = (last_sent + timeout).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert shown["in_doubt"] == {"count": 3, "resolves_at": expected}
    assert shown["stats"]["in_doubt"] == 3
    listed = await api.request("GET", "/api/v1/campaigns")
    assert listed.data[0]["in_doubt"]["count"] == 3


async def test_an_operator_fails_the_sends_in_doubt(api: Harness) -> None:
    with trio.fail_after(30):
        campaign = await paused_campaign_with_sends_in_doubt(api, 3)
        reply = await api.request(
            "POST", f"/api/v1/campaigns/{campaign['id']}/in-doubt", {"action": "fail"}
        )
        assert reply.status == 200, reply.body
        assert reply.json()["message"] == "3 in-doubt sends failed"
        data = reply.data
        assert (data["id"], data["action"], data["resolved"]) == (campaign["id"], "fail", 3)
        assert data["campaign"]["in_doubt"] == {"count": 0, "resolves_at": None}
        assert data["campaign"]["stats"]["failed"] == 3
        failed = await api.request(
            "GET", f"/api/v1/campaigns/{campaign['id']}/recipients?status=failed"
        )
        assert {r["error_code"] for r in failed.data} == {"outcome_unknown"}
        again = await api.request(
            "POST", f"/api/v1/campaigns/{campaign['id']}/in-doubt", {"action": "fail"}
        )
        assert again.data["resolved"] == 0


async def test_an_operator_resends_the_sends_in_doubt(api: Harness) -> None:
    with trio.fail_after(30):
        campaign = await paused_campaign_with_sends_in_doubt(api, 2)
        reply = await api.request(
            "POST", f"/api/v1/campaigns/{campaign['id']}/in-doubt", {"action": "resend"}
        )
        assert reply.status == 200, reply.body
        assert reply.json()["message"] == "2 in-doubt sends queued to be sent again"
        assert reply.data["campaign"]["stats"]["pending"] == 5
        assert reply.data["campaign"]["in_doubt"]["count"] == 0


async def test_resending_is_refused_once_the_campaign_is_finished(api: Harness) -> None:
    with trio.fail_after(30):
        campaign = await paused_campaign_with_sends_in_doubt(api, 2)
        await api.db.execute(
            "UPDATE campaigns SET status = 'cancelled' WHERE id = $1", campaign["id"]
        )
        reply = await api.request(
            "POST", f"/api/v1/campaigns/{campaign['id']}/in-doubt", {"action": "resend"}
        )
        assert reply.status == 400
        assert reply.json()["error"]["code"] == "campaign_finished"
        assert (await get(api, campaign["id"]))["in_doubt"]["count"] == 2  # nothing changed
        failed = await api.request(
            "POST", f"/api/v1/campaigns/{campaign['id']}/in-doubt", {"action": "fail"}
        )
        assert failed.data["resolved"] == 2


async def test_bad_requests_name_the_field_and_change_nothing(api: Harness) -> None:
    with trio.fail_after(30):
        campaign = await paused_campaign_with_sends_in_doubt(api, 1)
        path = f"/api/v1/campaigns/{campaign['id']}/in-doubt"
        for body, field in (
            ({}, "action"),
            ({"action": "maybe"}, "action"),
            ({"action": "fail", "extra": 1}, "extra"),
        ):
            reply = await api.request("POST", path, body)
            assert reply.status == 400, (body, reply.body)
            error = reply.json()
            assert error["error"]["field"] == field, error
            assert field in error["message"]
        malformed = await api.request("POST", path, body=b"{not json")
        assert malformed.status == 400
        assert malformed.json()["error"]["code"] == "malformed_json"
        assert (await api.request("POST", path, {"action": "fail"}, user=OTHER_USER)).status == 404
        unknown = "/api/v1/campaigns/00000000-0000-0000-0000-000000000000/in-doubt"
        assert (await api.request("POST", unknown, {"action": "fail"})).status == 404
        assert (
            await api.request("POST", "/api/v1/campaigns/nope/in-doubt", {"action": "fail"})
        ).status == 404
        assert (await get(api, campaign["id"]))["in_doubt"]["count"] == 1


async def test_the_openapi_document_states_the_risk_of_resending(api: Harness) -> None:
    reply = await api.request("GET", "/openapi.json", user=None)
    operation = reply.json()["paths"]["/api/v1/campaigns/{campaign_id}/in-doubt"]["post"]
    assert "twice" in operation["description"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/InDoubtResolution"}
