"""Tracked links: short per-recipient links in text messages, `GET /l/<code>`, click counts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from engine.core import tracked_links
from engine.core.campaign_view import metrics_payload, stats_payload
from engine.core.metrics import CampaignStats, compute_metrics
from engine.core.rendering import render_payload, with_tracked_links
from engine.core.tracked_links import LinkCodes, LinkRewriter
from engine.messages import CampaignEvent
from engine.store.database import Database
from tests.api_helpers import Harness, api, api_settings, gateway, open_harness
from tests.fake_gateway import ScriptedGateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

BASE = "https://go.example.test"
OFFER = "https://shop.example.com/offer"
OFFER_DETAIL = "https://shop.example.com/offer?ref=wa&x=1"
TEXT = f"Hi {{{{firstName}}}}, see {OFFER}. Details: {OFFER_DETAIL} and again {OFFER}"


# --- pure ---------------------------------------------------------------------------


def test_code_round_trips_and_tampering_is_refused() -> None:
    codes = LinkCodes(secrets.token_bytes(32))
    for recipient_id, index in ((1, 0), (300, 7), (2**63 - 1, 4096)):
        code = codes.issue(recipient_id, index)
        assert len(code) <= tracked_links.MAX_CODE_CHARS
        assert set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert codes.parse(code) == (recipient_id, index)
    code = codes.issue(42, 1)
    flipped = ("B" if code[0] == "A" else "A") + code[1:]
    last = code[:-1] + ("A" if code[-1] != "A" else "B")
    for bad in (flipped, last, code[:-2], code + "A", "", "!!!!", "é" * 10, "A" * 200):
        assert codes.parse(bad) is None, bad
    # Another database's key never accepts ours.
    assert LinkCodes(secrets.token_bytes(32)).parse(code) is None


def test_urls_are_extracted_in_order_and_rewritten_per_recipient() -> None:
    assert tracked_links.extract_urls(TEXT) == [OFFER, OFFER_DETAIL]
    assert tracked_links.extract_urls("no link, {{a}}https://x.io/{{b}} (http://y.io)") == [
        "https://x.io/",
        "http://y.io",
    ]
    codes = LinkCodes(b"k" * 32)
    rewriter = LinkRewriter(codes, [OFFER, OFFER_DETAIL], BASE + "/")
    one, two = rewriter.rewrite(TEXT, 1), rewriter.rewrite(TEXT, 2)
    assert OFFER not in one and one != two
    link0, link1 = f"{BASE}/l/{codes.issue(1, 0)}", f"{BASE}/l/{codes.issue(1, 1)}"
    assert one == f"Hi {{{{firstName}}}}, see {link0}. Details: {link1} and again {link0}"

    payload = render_payload("text", TEXT, {"firstName": "Ana"}, {})
    tracked = with_tracked_links(
        payload, 1, key=b"k" * 32, urls=(OFFER, OFFER_DETAIL), base_url=BASE
    )
    assert tracked["body"] == one.replace("{{firstName}}", "Ana")
    assert payload["body"].startswith("Hi Ana, see https://shop")  # the input is not changed


def test_longest_rewritten_counts_every_occurrence() -> None:
    link = len(BASE) + len("/l/") + tracked_links.MAX_CODE_CHARS
    expected = len(TEXT) - 2 * len(OFFER) - len(OFFER_DETAIL) + 3 * link
    assert tracked_links.longest_rewritten(TEXT, [OFFER, OFFER_DETAIL], BASE) == expected
    assert tracked_links.longest_rewritten("plain", [], BASE) == 5


def test_click_rate_is_clicked_over_delivered() -> None:
    stats = CampaignStats(sent=4, delivered=3, clicked=2)
    assert compute_metrics(stats, 4).click_rate == 66.67
    assert compute_metrics(CampaignStats(clicked=1), 1).click_rate == 0.0
    # What campaign:stats and the campaign object carry.
    assert stats_payload(stats)["clicked"] == 2
    assert metrics_payload(stats, 4)["click_rate"] == 66.67


# --- over HTTP, with the engine -----------------------------------------------------


@pytest.fixture
async def linked(db: Database, gateway: ScriptedGateway) -> AsyncIterator[Harness]:
    settings = api_settings(CAMPAIGN_ENGINE_LINKS_BASE_URL=BASE)
    async with trio.open_nursery() as nursery:
        harness: Harness = await nursery.start(open_harness, db, settings, gateway)
        yield harness
        nursery.cancel_scope.cancel()


def _error(reply: Any) -> tuple[int, str, str | None]:
    body = reply.json()
    assert body["success"] is False and body["message"].startswith(body["error"]["field"])
    return reply.status, body["error"]["code"], body["error"]["field"]


async def test_tracked_links_need_the_base_url(api: Harness) -> None:
    with trio.fail_after(20):
        account = await api.make_account()
        body = {
            "accountId": account,
            "name": "Links",
            "messageType": "text",
            "messageContent": TEXT,
            "audienceType": "all",
            "scheduleType": "manual",
            "trackLinks": True,
        }
        reply = await api.request("POST", "/api/v1/campaigns", body)
        assert _error(reply) == (400, "validation_failed", "trackLinks")
        assert "links.base_url" in reply.json()["message"]
        assert await api.db.fetchval("SELECT count(*) FROM campaigns") == 0
        # Without trackLinks the same campaign is fine; turning it on by PATCH is refused.
        campaign = await api.make_campaign(account, messageContent=TEXT)
        assert campaign["track_links"] is False
        patch = await api.request(
            "PATCH", f"/api/v1/campaigns/{campaign['id']}", {"trackLinks": True}
        )
        assert _error(patch) == (400, "validation_failed", "trackLinks")


async def test_refused_when_the_rewritten_body_could_be_too_long(linked: Harness) -> None:
    with trio.fail_after(20):
        account = await linked.make_account()
        # 4000 characters fit as written; 100 short URLs become 100 longer links.
        long_text = " ".join(f"https://a.io/{i:02d}" for i in range(100))
        long_text += " " + "x" * (4000 - len(long_text) - 1)
        assert len(long_text) == 4000
        body = {
            "accountId": account,
            "name": "Long",
            "messageType": "text",
            "messageContent": long_text,
            "audienceType": "all",
            "scheduleType": "manual",
            "trackLinks": True,
        }
        reply = await linked.request("POST", "/api/v1/campaigns", body)
        assert _error(reply) == (400, "validation_failed", "messageContent")
        assert "4096" in reply.json()["message"]
        template = body | {
            "messageType": "template",
            "messageContent": {"name": "t", "language": "en"},
        }
        refused = await linked.request("POST", "/api/v1/campaigns", template)
        assert _error(refused) == (400, "validation_failed", "trackLinks")
        assert await linked.db.fetchval("SELECT count(*) FROM campaigns") == 0
        # Untracked, the same text is accepted.
        assert (
            await linked.request("POST", "/api/v1/campaigns", body | {"trackLinks": False})
        ).status == 201


async def _sent_campaign(linked: Harness, size: int) -> tuple[str, dict[int, str]]:
    """A tracked campaign sent to `size` contacts: its id and each recipient's body."""
    account = await linked.make_account()
    await linked.make_contacts(size)
    async with linked.engine.broadcaster.subscribe() as events:
        campaign = await linked.make_campaign(
            account, messageContent=TEXT, scheduleType="now", trackLinks=True
        )
        assert campaign["track_links"] is True
        async for event in events:
            if (
                isinstance(event, CampaignEvent)
                and event.name == "campaign:completed"
                and event.payload["campaignId"] == campaign["id"]
            ):
                break
    bodies = {s.message.recipient_id: s.message.payload["body"] for s in linked.gateway.sends}
    return campaign["id"], bodies


def _links(body: str) -> list[str]:
    return [word.rstrip(".") for word in body.split() if word.startswith(BASE)]


async def _campaign(linked: Harness, campaign_id: str) -> dict[str, Any]:
    campaign: dict[str, Any] = (
        await linked.request("GET", f"/api/v1/campaigns/{campaign_id}")
    ).data
    return campaign


async def test_links_are_per_recipient_and_clicks_count_once(linked: Harness) -> None:
    with trio.fail_after(60):
        campaign_id, bodies = await _sent_campaign(linked, 2)
        assert len(bodies) == 2
        (first, first_body), (_, second_body) = sorted(bodies.items())
        assert OFFER not in first_body and first_body.startswith("Hi First")
        first_links, second_links = _links(first_body), _links(second_body)
        # Two distinct URLs, the first one twice: the same link both times.
        assert len(first_links) == 3 and first_links[0] == first_links[2]
        assert len(set(first_links)) == 2 and not set(first_links) & set(second_links)

        def path(link: str) -> str:
            return urlsplit(link).path

        click = await linked.request("GET", path(first_links[1]), user=None)
        assert click.status == 302 and click.headers["location"] == OFFER_DETAIL
        clicked_at = await linked.db.fetchval(
            "SELECT clicked_at FROM campaign_recipients WHERE id = $1", first
        )
        assert clicked_at is not None
        # The same recipient again, on either link: redirected, not counted again.
        again = await linked.request("GET", path(first_links[0]), user=None)
        assert again.status == 302 and again.headers["location"] == OFFER
        assert (await _campaign(linked, campaign_id))["stats"]["clicked"] == 1
        assert (
            await linked.db.fetchval(
                "SELECT clicked_at FROM campaign_recipients WHERE id = $1", first
            )
            == clicked_at
        )
        other = await linked.request("GET", path(second_links[0]), user=None)
        assert other.status == 302 and other.headers["location"] == OFFER

        # Delivered to both (as their status webhooks would say): 2 clicks of 2.
        await linked.db.execute(
            """UPDATE campaign_recipients SET status = 'delivered', delivered_at = now()
               WHERE campaign_id = $1""",
            campaign_id,
        )
        campaign = await _campaign(linked, campaign_id)
        assert campaign["stats"]["clicked"] == 2 and campaign["metrics"]["click_rate"] == 100.0


async def test_unknown_or_tampered_codes_answer_404(linked: Harness) -> None:
    with trio.fail_after(60):
        campaign_id, bodies = await _sent_campaign(linked, 1)
        [link, *_] = _links(next(iter(bodies.values())))
        code = urlsplit(link).path.removeprefix("/l/")
        tampered = code[:-1] + ("A" if code[-1] != "A" else "B")
        codes = LinkCodes(
            bytes.fromhex(await linked.db.fetchval("SELECT key FROM callback_reference_key"))
        )
        recipient_id, _ = codes.parse(code) or (0, 0)
        for bad in (tampered, "nope", codes.issue(recipient_id, 9), codes.issue(10**12, 0)):
            reply = await linked.request("GET", f"/l/{bad}", user=None)
            assert reply.status == 404, bad
            assert reply.headers["content-type"].startswith("text/plain")
        # A campaign that does not track links has no links, even for a valid code.
        await linked.db.execute(
            "UPDATE campaigns SET track_links = false WHERE id = $1", campaign_id
        )
        assert (await linked.request("GET", f"/l/{code}", user=None)).status == 404
        await linked.db.execute(
            "UPDATE campaigns SET track_links = true WHERE id = $1", campaign_id
        )
        assert (await linked.request("GET", f"/l/{code}", user=None)).status == 302
        assert (await _campaign(linked, campaign_id))["stats"]["clicked"] == 1
