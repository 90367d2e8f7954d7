"""The messaging limit over HTTP: accounts take `portfolioId` and `messagingLimit`
(field-named 400s), and `GET /accounts/:id` shows the window's use."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.api_helpers import Harness, api, gateway
from tests.test_api_routes import _next_event, assert_error, assert_ok

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

BASE = {"name": "Main", "phoneNumberId": "PN1", "accessToken": "t"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messagingLimit": 0}, "messagingLimit"),
        ({"messagingLimit": -250}, "messagingLimit"),
        ({"messagingLimit": 2.5}, "messagingLimit"),
        ({"messagingLimit": "250"}, "messagingLimit"),
        ({"portfolioId": ""}, "portfolioId"),
        ({"portfolioId": "a b"}, "portfolioId"),
        ({"portfolioId": "x" * 65}, "portfolioId"),
    ],
)
async def test_bad_limits_are_refused_naming_the_field(
    api: Harness, body: dict[str, Any], field: str
) -> None:
    with trio.fail_after(20):
        assert_error(
            await api.request("POST", "/api/v1/accounts", BASE | body),
            400,
            "validation_failed",
            field,
        )
        key = await api.make_account()
        assert_error(
            await api.request("PATCH", f"/api/v1/accounts/{key}", body),
            400,
            "validation_failed",
            field,
        )
        assert len(assert_ok(await api.request("GET", "/api/v1/accounts"))) == 1


async def test_an_account_shows_its_portfolio_and_the_window_use(api: Harness) -> None:
    with trio.fail_after(30):
        created = assert_ok(
            await api.request(
                "POST",
                "/api/v1/accounts",
                BASE | {"portfolioId": "waba-1", "messagingLimit": 250},
            ),
            201,
        )
        assert (created["portfolio_id"], created["messaging_limit"]) == ("waba-1", 250)
        key = created["id"]
        await api.make_contacts(3)
        campaign = (await api.make_campaign(key))["id"]
        async with api.engine.broadcaster.subscribe() as events:
            assert_ok(await api.request("POST", f"/api/v1/campaigns/{campaign}/start"))
            await _next_event(events, "campaign:completed", campaign)
        shown = assert_ok(await api.request("GET", f"/api/v1/campaigns/{campaign}"))
        assert shown["deferred_count"] == 0 and shown["deferred_until"] is None
        assert shown["waiting_for_window"] is False
        window = assert_ok(await api.request("GET", f"/api/v1/accounts/{key}"))["messaging_window"]
        assert (window["limit"], window["used"]) == (250, 3)
        assert window["resets_at"].endswith("Z")
        # Unset: unlimited, and nothing counted from then on.
        patched = assert_ok(
            await api.request("PATCH", f"/api/v1/accounts/{key}", {"messagingLimit": None})
        )
        assert patched["messaging_limit"] is None and patched["portfolio_id"] == "waba-1"
        window = assert_ok(await api.request("GET", f"/api/v1/accounts/{key}"))["messaging_window"]
        assert window["limit"] is None
        plain = await api.make_account()
        window = assert_ok(await api.request("GET", f"/api/v1/accounts/{plain}"))
        assert window["messaging_window"] == {"limit": None, "used": 0, "resets_at": None}


async def test_recipients_beyond_the_limit_wait_with_a_reason_and_an_eta(api: Harness) -> None:
    with trio.fail_after(30):
        key = await api.make_account(messagingLimit=2)
        await api.make_contacts(3)
        campaign = (await api.make_campaign(key))["id"]
        async with api.engine.broadcaster.subscribe() as events:
            assert_ok(await api.request("POST", f"/api/v1/campaigns/{campaign}/start"))
            event = await _next_event(events, "campaign:deferred", campaign)
        assert event.payload["reason"] == "messaging_limit" and event.payload["count"] == 1
        shown = assert_ok(await api.request("GET", f"/api/v1/campaigns/{campaign}"))
        assert shown["status"] == "running"
        assert shown["deferred_count"] == 1
        assert shown["deferred_until"] == event.payload["deferredUntil"]
        assert "messaging limit" in shown["deferred_reason"]
        waiting = assert_ok(
            await api.request("GET", f"/api/v1/campaigns/{campaign}/recipients?status=pending")
        )
        assert [(r["deferred_reason"], r["deferred_until"]) for r in waiting] == [
            ("messaging_limit", event.payload["deferredUntil"])
        ]
        window = assert_ok(await api.request("GET", f"/api/v1/accounts/{key}"))["messaging_window"]
        assert (window["limit"], window["used"]) == (2, 2)
        # Counted from the sends, a few ms after the reservation that set the ETA.
        assert window["resets_at"] >= event.payload["deferredUntil"]
