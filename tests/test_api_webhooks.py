"""Status webhooks over HTTP: signatures, subscription check, strict matching, facts
that cannot be stored, and their effect on the campaign's stats and metrics (the
spec's formulas), replays and disorder included."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from engine.core.webhook_payload import sign
from engine.messages import CampaignEvent
from tests.api_helpers import APP_SECRET, VERIFY_TOKEN, Harness, api, gateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

T0 = 1_760_000_000


def status(wamid: str, kind: str, at: int | str, reference: str | None = None, **extra: Any) -> Any:
    item: dict[str, Any] = {"id": wamid, "status": kind, "timestamp": str(at), "recipient_id": "1"}
    if reference is not None:
        item["biz_opaque_callback_data"] = reference
    return item | extra


def reply_to(wamid: str, at: int) -> Any:
    return {
        "from": "1",
        "id": f"wamid.in.{wamid}",
        "timestamp": str(at),
        "type": "text",
        "text": {"body": "yes"},
        "context": {"from": "PN1", "id": wamid},
    }


def notification(
    statuses: list[Any], messages: list[Any] | None = None, phone_number_id: str = "PN1"
) -> bytes:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": phone_number_id},
    }
    value["statuses"] = statuses
    if messages:
        value["messages"] = messages
    return msgspec.json.encode(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}],
        }
    )


async def post(api: Harness, body: bytes, signature: str | None = "valid") -> Any:
    headers = {}
    if signature == "valid":
        headers["X-Hub-Signature-256"] = sign(APP_SECRET, body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return await api.request("POST", "/webhooks/whatsapp", body=body, user=None, headers=headers)


async def stats_event(events: trio.MemoryReceiveChannel[Any], campaign_id: str, **want: int) -> Any:
    """The first campaign:stats event whose counts include `want`."""
    async for event in events:
        if (
            isinstance(event, CampaignEvent)
            and event.name == "campaign:stats"
            and event.payload["campaignId"] == campaign_id
            and all(event.payload["stats"][k] == v for k, v in want.items())
        ):
            return event.payload
    raise AssertionError("broadcaster closed")


async def completed_campaign(api: Harness, size: int) -> tuple[str, list[tuple[int, str]]]:
    """A campaign sent to `size` recipients: its id and (recipient id, wamid) in id order."""
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


async def test_verify_subscription(api: Harness) -> None:
    with trio.fail_after(20):
        ok = await api.request(
            "GET",
            f"/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=12345",
            user=None,
        )
        assert (ok.status, ok.body) == (200, b"12345")
        assert ok.headers["content-type"].startswith("text/plain")
        for query in (
            "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
            f"hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1",
            "hub.challenge=1",
        ):
            refused = await api.request("GET", f"/webhooks/whatsapp?{query}", user=None)
            assert refused.status == 403 and refused.json()["success"] is False


async def test_signature_is_required_and_checked(api: Harness) -> None:
    with trio.fail_after(30):
        campaign_id, recipients = await completed_campaign(api, 2)
        before = (await api.request("GET", f"/api/v1/campaigns/{campaign_id}")).json()["data"]
        body = notification([status(wamid, "delivered", T0) for _, wamid in recipients])
        for signature in (
            None,
            "sha256=" + "0" * 64,
            sign("other-secret", body),
            "md5=abc",
            "sha256=é" + "0" * 63,  # not ASCII: still just wrong
        ):
            reply = await post(api, body, signature)
            assert reply.status == 401 and reply.json()["error"]["code"] == "invalid_signature"
        assert api.engine.statistics().webhooks.received == 0
        # A body changed after signing is refused too.
        tampered = await post(api, body + b" ", sign(APP_SECRET, body))
        assert tampered.status == 401
        # Signed but not a notification: 400 naming the field, nothing applied.
        for bad, field in ((b"{", None), (b"[]", None), (b'{"entry": [3]}', "entry[0]")):
            refused = await post(api, bad)
            assert refused.status == 400
            assert refused.json()["error"] == {"code": "malformed_payload"} | (
                {"field": field} if field else {}
            )
        after = (await api.request("GET", f"/api/v1/campaigns/{campaign_id}")).json()["data"]
        assert after["stats"] == before["stats"] and after["stats"]["delivered"] == 0
        assert api.engine.statistics().webhooks.received == 0


async def test_statuses_and_replies_move_metrics_once(api: Harness) -> None:
    with trio.fail_after(60):
        campaign_id, recipients = await completed_campaign(api, 4)
        (_, w1), (id2, w2), (_, w3), (id4, w4) = recipients
        issue = api.engine.callback_references.issue
        first = notification(
            [
                status(w1, "delivered", T0 + 1),
                status(w2, "delivered", T0 + 1, reference=issue(id2)),
                status(w2, "read", T0 + 2),
                status(w3, "read", T0 + 2),  # read before any delivered: read implies delivered
                status(
                    w4,
                    "failed",
                    T0 + 3,
                    reference=issue(id4),
                    errors=[{"code": 131026, "title": "Message undeliverable"}],
                ),
                status("wamid.unknown", "delivered", T0),  # not ours: ignored
            ],
            [reply_to(w1, T0 + 5)],
        )
        async with api.engine.broadcaster.subscribe() as events:
            reply = await post(api, first)
            assert (reply.status, reply.json()) == (200, {"success": True})
            payload = await stats_event(
                events, campaign_id, delivered=3, read=2, replied=1, failed=1
            )
        assert payload["stats"]["sent"] == 4
        expected_metrics = {
            "delivery_rate": 75.0,  # delivered / sent = 3 / 4
            "read_rate": 66.67,  # read / delivered = 2 / 3
            "reply_rate": 33.33,  # replied / delivered = 1 / 3
            "failure_rate": 25.0,  # failed / total = 1 / 4
            "click_rate": 0.0,  # no tracked links
        }
        assert payload["metrics"] == expected_metrics
        campaign = (await api.request("GET", f"/api/v1/campaigns/{campaign_id}")).json()["data"]
        assert campaign["metrics"] == expected_metrics
        failed = (
            await api.request("GET", f"/api/v1/campaigns/{campaign_id}/recipients?status=failed")
        ).json()["data"]
        assert [(r["provider_message_id"], r["error_code"]) for r in failed] == [(w4, "131026")]

        # Replayed, and late or older statuses: nothing moves. A new fact sent after
        # them tells when they have all been applied (the applier keeps order).
        async with api.engine.broadcaster.subscribe() as events:
            assert (await post(api, first)).status == 200
            late = notification(
                [
                    status(w3, "delivered", T0 + 1),
                    status(w2, "sent", T0),
                    status(w4, "failed", T0 + 4, reference=issue(id4)),
                ],
                [reply_to(w1, T0 + 6)],
            )
            assert (await post(api, late)).status == 200
            assert (await post(api, notification([status(w1, "read", T0 + 7)]))).status == 200
            payload = await stats_event(events, campaign_id, read=3)
        assert payload["stats"] == {
            "pending": 0,
            "sent": 4,
            "delivered": 3,
            "read": 3,
            "replied": 1,
            "failed": 1,
            "in_doubt": 0,
            "clicked": 0,
        }
        recipients_now = (
            await api.request("GET", f"/api/v1/campaigns/{campaign_id}/recipients")
        ).json()["data"]
        by_wamid = {r["provider_message_id"]: r for r in recipients_now}
        assert by_wamid[w4]["status"] == "failed" and by_wamid[w4]["delivered_at"] is None
        assert by_wamid[w3]["status"] == "read" and by_wamid[w2]["status"] == "read"
        assert by_wamid[w1]["replied_at"] == "2025-10-09T08:53:25.000Z"  # the first reply
        metrics = (await api.request("GET", "/metrics", user=None)).body.decode()
        assert "campaign_engine_webhook_facts_received_total" in metrics


async def test_a_guessable_recipient_id_is_not_a_reference(api: Harness) -> None:
    with trio.fail_after(30):
        campaign_id, [(recipient_id, wamid)] = await completed_campaign(api, 1)
        async with api.engine.broadcaster.subscribe() as events:
            # The row number alone, or another application's value, names nobody: these
            # read statuses for a message we never sent change nothing...
            guessed = notification(
                [
                    status("wamid.theirs", "read", T0, reference=str(recipient_id)),
                    status("wamid.theirs2", "read", T0, reference="order-77"),
                ]
            )
            assert (await post(api, guessed)).status == 200
            # ... while our own reference, with the message's wamid, does.
            ours = notification(
                [
                    status(
                        wamid,
                        "delivered",
                        T0,
                        reference=api.engine.callback_references.issue(recipient_id),
                    )
                ]
            )
            assert (await post(api, ours)).status == 200
            payload = await stats_event(events, campaign_id, delivered=1)
        assert payload["stats"]["read"] == 0
        webhooks = api.engine.statistics().webhooks
        assert (webhooks.applied_facts, webhooks.unmatched) == (3, 2)
        metrics = (await api.request("GET", "/metrics", user=None)).body.decode()
        assert 'campaign_engine_webhook_facts_skipped_total{reason="unmatched"} 2.0' in metrics


async def test_a_status_from_another_number_applies_nothing(api: Harness) -> None:
    with trio.fail_after(30):
        campaign_id, [(recipient_id, wamid)] = await completed_campaign(api, 1)
        reference = api.engine.callback_references.issue(recipient_id)
        async with api.engine.broadcaster.subscribe() as events:
            foreign = notification(
                [status(wamid, "read", T0, reference=reference)],
                [reply_to(wamid, T0 + 1)],
                phone_number_id="PN-ELSEWHERE",
            )
            assert (await post(api, foreign)).status == 200
            mine = notification([status(wamid, "delivered", T0, reference=reference)])
            assert (await post(api, mine)).status == 200
            payload = await stats_event(events, campaign_id, delivered=1)
        assert (payload["stats"]["read"], payload["stats"]["replied"]) == (0, 0)


async def test_facts_that_cannot_be_stored_are_skipped_and_the_rest_applied(
    api: Harness,
) -> None:
    with trio.fail_after(60):
        campaign_id, recipients = await completed_campaign(api, 3)
        (_, w1), (_, w2), (id3, w3) = recipients
        issue = api.engine.callback_references.issue
        poison = notification(
            [
                # Out of the integer range, and a Unicode digit: not references, so
                # matched by wamid, and applied.
                status(w1, "delivered", T0, reference="99999999999999999999"),
                status(w2, "delivered", T0, reference="\u00b2"),
                # A NUL byte in the error title, a Unicode digit as timestamp: refused.
                status(
                    w3, "failed", T0, reference=issue(id3), errors=[{"code": 1, "title": "a\x00b"}]
                ),
                status(w3, "read", "\u00b2"),
            ]
        )
        async with api.engine.broadcaster.subscribe() as events:
            reply = await post(api, poison)
            assert (reply.status, reply.json()) == (200, {"success": True})
            # A body of nothing but refused facts is still a 200 (Meta would retry it for days).
            only_poison = notification([status(w3, "read", T0, errors="none")])
            assert (await post(api, only_poison)).status == 200
            payload = await stats_event(events, campaign_id, delivered=2)
        assert (payload["stats"]["failed"], payload["stats"]["read"]) == (0, 0)
        webhooks = api.engine.statistics().webhooks
        assert (webhooks.received, webhooks.refused) == (2, 3)
        metrics = (await api.request("GET", "/metrics", user=None)).body.decode()
        assert 'campaign_engine_webhook_facts_skipped_total{reason="invalid"} 3.0' in metrics
        # The daemon goes on: a later status still applies.
        async with api.engine.broadcaster.subscribe() as events:
            later = notification([status(w3, "read", T0 + 5, reference=issue(id3))])
            assert (await post(api, later)).status == 200
            await stats_event(events, campaign_id, delivered=3, read=1)


async def test_a_verify_token_that_is_not_ascii_is_refused(api: Harness) -> None:
    with trio.fail_after(20):
        reply = await api.request(
            "GET",
            "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=%C3%A9&hub.challenge=1",
            user=None,
        )
        assert reply.status == 403 and reply.json()["error"]["code"] == "verification_failed"
