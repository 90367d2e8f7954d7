"""A/B variants over HTTP: what a create accepts and refuses, and what a campaign shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from engine.messages import CampaignEvent
from engine.store.database import Database
from tests.api_helpers import Harness, api, api_settings, gateway, open_harness
from tests.fake_gateway import ScriptedGateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

VARIANTS = [
    {"name": "A", "messageContent": "Hi {{firstName}}, see https://shop.example/a", "weight": 1},
    {"name": "B", "messageContent": "Hello {{firstName}}! https://shop.example/b", "weight": 2.5},
]


def _refusal(reply: Any) -> tuple[int, str | None, str]:
    body = reply.json()
    assert reply.status == 400 and body["success"] is False, reply.body
    assert body["message"].startswith(body["error"]["field"])
    return reply.status, body["error"]["field"], body["message"]


async def test_bad_variants_are_refused_naming_the_field_and_rule(api: Harness) -> None:
    with trio.fail_after(20):
        account = await api.make_account()
        base = {
            "accountId": account,
            "name": "AB",
            "messageType": "text",
            "messageContent": "Hi",
            "audienceType": "all",
            "scheduleType": "manual",
        }
        one = [VARIANTS[0]]
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"variants": one}, "variants", "2 to 5"),
            ({"variants": VARIANTS * 3}, "variants", "2 to 5"),
            ({"variants": [VARIANTS[0], VARIANTS[0]]}, "variants[1].name", "unique"),
            ({"variants": [VARIANTS[0], VARIANTS[1] | {"name": ""}]}, "variants[1].name", ""),
            ({"variants": [VARIANTS[0], VARIANTS[1] | {"weight": 0}]}, "variants[1].weight", ""),
            (
                {"variants": [VARIANTS[0], VARIANTS[1] | {"weight": -1}]},
                "variants[1].weight",
                "greater than 0",
            ),
            (
                {"variants": [VARIANTS[0], VARIANTS[1] | {"messageContent": "  "}]},
                "variants[1].messageContent",
                "non-empty",
            ),
            (
                {"variants": [VARIANTS[0], VARIANTS[1] | {"messageContent": {"name": "t"}}]},
                "variants[1].messageContent",
                "string",
            ),
            (
                {"variants": [VARIANTS[0], VARIANTS[1] | {"messageContent": "x" * 4097}]},
                "variants[1].messageContent",
                "4096",
            ),
            (
                {"variants": [VARIANTS[0], {"name": "B", "weight": 1}]},
                "variants[1].messageContent",
                "required",
            ),
            (
                {"variants": [VARIANTS[0], VARIANTS[1] | {"colour": "red"}]},
                "variants[1].colour",
                "not a known field",
            ),
            (
                {"abTest": {"sampleShare": 0.2, "metric": "read_rate", "decideAfterMinutes": 5}},
                "abTest",
                "needs variants",
            ),
            (
                {
                    "variants": VARIANTS,
                    "abTest": {"sampleShare": 1, "metric": "read_rate", "decideAfterMinutes": 5},
                },
                "abTest.sampleShare",
                "greater than 0 and less than 1",
            ),
            (
                {
                    "variants": VARIANTS,
                    "abTest": {"sampleShare": 0.2, "metric": "opens", "decideAfterMinutes": 5},
                },
                "abTest.metric",
                '"read_rate", "reply_rate", "click_rate"',
            ),
            (
                {
                    "variants": VARIANTS,
                    "abTest": {"sampleShare": 0.2, "metric": "read_rate", "decideAfterMinutes": 0},
                },
                "abTest.decideAfterMinutes",
                "greater than 0",
            ),
            (
                {
                    "variants": VARIANTS,
                    "abTest": {"sampleShare": 0.2, "metric": "click_rate", "decideAfterMinutes": 5},
                },
                "abTest.metric",
                "trackLinks",
            ),
        ]
        for extra, field, rule in cases:
            reply = await api.request("POST", "/api/v1/campaigns", base | extra)
            _, got_field, message = _refusal(reply)
            assert got_field == field, (extra, message)
            assert rule in message, (extra, message)
        # A template campaign's variants are templates, checked as its own content is.
        template = base | {
            "messageType": "template",
            "messageContent": {"name": "t", "language": "en"},
            "variants": [
                {"name": "A", "messageContent": {"name": "a", "language": "en"}, "weight": 1},
                {"name": "B", "messageContent": {"name": "b"}, "weight": 1},
            ],
        }
        _, field, _ = _refusal(await api.request("POST", "/api/v1/campaigns", template))
        assert field == "variants[1].messageContent.language"
        assert await api.db.fetchval("SELECT count(*) FROM campaigns") == 0


@pytest.fixture
async def linked(db: Database, gateway: ScriptedGateway) -> AsyncIterator[Harness]:
    settings = api_settings(CAMPAIGN_ENGINE_LINKS_BASE_URL="https://go.example.test")
    async with trio.open_nursery() as nursery:
        harness: Harness = await nursery.start(open_harness, db, settings, gateway)
        yield harness
        nursery.cancel_scope.cancel()


async def test_a_campaign_with_variants_sends_each_its_message_and_shows_them(
    linked: Harness,
) -> None:
    with trio.fail_after(60):
        account = await linked.make_account()
        await linked.make_contacts(30)
        test = {"sampleShare": 0.5, "metric": "click_rate", "decideAfterMinutes": 30}
        draft = await linked.make_campaign(account, variants=VARIANTS, abTest=test, trackLinks=True)
        assert [(v["name"], v["weight"]) for v in draft["variants"]] == [("A", 1), ("B", 2.5)]
        assert draft["variants"][0]["message_content"] == VARIANTS[0]["messageContent"]
        assert draft["variants"][0]["stats"] is None  # counted in the detail only
        assert draft["ab_test"] == {
            "sample_share": 0.5,
            "metric": "click_rate",
            "decide_after_minutes": 30,
            "phase": "not_started",
            "sample_size": None,
            "decide_at": None,
            "decided_at": None,
            "winner": None,
            "values": None,
        }
        # Both variants' URLs are tracked.
        urls = await linked.db.fetchval(
            "SELECT tracked_urls FROM campaigns WHERE id = $1", draft["id"]
        )
        assert urls == ["https://shop.example/a", "https://shop.example/b"]
        copy = await linked.request("POST", f"/api/v1/campaigns/{draft['id']}/duplicate")
        shown = (await linked.request("GET", f"/api/v1/campaigns/{copy.data['id']}")).data
        assert shown["variants"][1]["name"] == "B" and shown["ab_test"]["metric"] == "click_rate"

        async with linked.engine.broadcaster.subscribe() as events:
            started = await linked.request("POST", f"/api/v1/campaigns/{draft['id']}/start")
            assert started.status == 200
            async for event in events:
                if isinstance(event, CampaignEvent) and event.name == "campaign:sample_sent":
                    break
        detail = (await linked.request("GET", f"/api/v1/campaigns/{draft['id']}")).data
        ab = detail["ab_test"]
        assert ab["phase"] == "waiting" and ab["decide_at"] is not None
        sample = ab["sample_size"]
        assert sum(v["recipients"] for v in detail["variants"]) == sample
        assert sum(v["stats"]["sent"] for v in detail["variants"]) == sample
        assert detail["stats"]["pending"] == 30 - sample
        bodies = [s.message.payload["body"] for s in linked.gateway.sends]
        assert len(bodies) == sample
        assert all(b.startswith(("Hi First", "Hello First")) for b in bodies)
        assert all("https://go.example.test/l/" in b and "shop.example" not in b for b in bodies)
        shown_recipients = (
            await linked.request("GET", f"/api/v1/campaigns/{draft['id']}/recipients?limit=500")
        ).data
        variants_of = [r["variant"] for r in shown_recipients]
        assert sorted(v for v in variants_of if v is not None) == sorted(
            i for i, v in enumerate(detail["variants"]) for _ in range(v["recipients"])
        )
        assert variants_of.count(None) == 30 - sample  # the rest wait for the winner
        listed = (await linked.request("GET", "/api/v1/campaigns")).data
        assert {c["id"]: c["ab_test"]["phase"] for c in listed}[draft["id"]] == "waiting"


async def test_an_edit_that_would_break_a_variant_is_refused(linked: Harness) -> None:
    with trio.fail_after(30):
        account = await linked.make_account()
        draft = await linked.make_campaign(account, variants=VARIANTS)
        path = f"/api/v1/campaigns/{draft['id']}"
        template = {"messageType": "template", "messageContent": {"name": "t", "language": "en"}}
        _, field, message = _refusal(await linked.request("PATCH", path, template))
        assert field == "variants[0].messageContent" and "must be an object" in message
        shown = (await linked.request("GET", path)).data
        assert shown["message_type"] == "text" and shown["variants"][0]["name"] == "A"
        # Turning tracked links on tracks every variant's URLs too.
        patched = await linked.request("PATCH", path, {"trackLinks": True})
        assert patched.status == 200, patched.body
        urls = await linked.db.fetchval(
            "SELECT tracked_urls FROM campaigns WHERE id = $1", draft["id"]
        )
        assert urls == ["https://shop.example/a", "https://shop.example/b"]


async def test_a_variant_s_variables_are_checked_as_the_campaign_s(api: Harness) -> None:
    with trio.fail_after(30):
        account = await api.make_account()
        await api.make_contacts(3)
        unknown = [VARIANTS[0], VARIANTS[1] | {"messageContent": "Hi {{shoeSize}}"}]
        reply = await api.request(
            "POST",
            "/api/v1/campaigns",
            {
                "accountId": account,
                "name": "AB",
                "messageType": "text",
                "messageContent": "Hi",
                "audienceType": "all",
                "scheduleType": "manual",
                "variants": unknown,
            },
        )
        _, field, message = _refusal(reply)
        assert field == "variants[1].messageContent" and "shoeSize" in message
        # A variable no recipient has a value for: the start says so, unless allowed.
        lacking = [VARIANTS[0], VARIANTS[1] | {"messageContent": "Hi {{email}}"}]
        draft = await api.make_campaign(account, variants=lacking)
        start = await api.request("POST", f"/api/v1/campaigns/{draft['id']}/start")
        assert start.status == 400 and start.json()["error"]["code"] == "missing_variable"
        assert "{{email}} is missing for 3 recipients" in start.json()["message"]
        allowed = await api.make_campaign(
            account, variants=lacking, allowMissingVariables=True, scheduleType="now"
        )
        assert allowed["status"] == "scheduled"
