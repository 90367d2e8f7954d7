"""Send windows over HTTP: `sendWindow {start, end, timezone?}` is checked (field-named
400s, nothing written), stored, shown, edited, cleared and copied by duplicate."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.api_helpers import Harness, api, gateway
from tests.test_api_routes import assert_error, assert_ok

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"start": "9:00", "end": "20:00"}, "sendWindow.start"),
        ({"start": "09:00", "end": "24:00"}, "sendWindow.end"),
        ({"start": "09:00", "end": "09:00"}, "sendWindow.end"),
        ({"start": "09:00", "end": "20:00", "timezone": "Mars/Olympus"}, "sendWindow.timezone"),
        ({"start": "09:00", "end": "20:00", "timezone": "../etc/passwd"}, "sendWindow.timezone"),
        ({"start": "09:00"}, "sendWindow"),
        ({"start": "09:00", "end": "20:00", "days": [1]}, "sendWindow"),
        ("09:00-20:00", "sendWindow"),
    ],
)
async def test_bad_windows_are_refused_naming_the_field(
    api: Harness, window: Any, field: str
) -> None:
    with trio.fail_after(20):
        account = await api.make_account()
        reply = await api.request(
            "POST",
            "/api/v1/campaigns",
            {
                "accountId": account,
                "name": "Night",
                "messageType": "text",
                "messageContent": "Hi",
                "audienceType": "all",
                "scheduleType": "manual",
                "sendWindow": window,
            },
        )
        message = assert_error(reply, 400, "validation_failed")
        assert reply.json()["error"]["field"].startswith(field), message
        assert assert_ok(await api.request("GET", "/api/v1/campaigns")) == []
        draft = (await api.make_campaign(account))["id"]
        reply = await api.request("PATCH", f"/api/v1/campaigns/{draft}", {"sendWindow": window})
        assert_error(reply, 400, "validation_failed")
        shown = assert_ok(await api.request("GET", f"/api/v1/campaigns/{draft}"))
        assert shown["send_window"] is None


async def test_a_window_is_stored_shown_edited_and_copied(api: Harness) -> None:
    with trio.fail_after(20):
        account = await api.make_account()
        night = {"start": "21:00", "end": "06:00", "timezone": "America/New_York"}
        created = await api.make_campaign(account, sendWindow=night)
        assert created["send_window"] == night
        assert created["waiting_for_window"] is False
        assert created["next_window_opens_at"] is None
        key = created["id"]
        day = {"start": "09:00", "end": "20:00"}
        patched = assert_ok(
            await api.request("PATCH", f"/api/v1/campaigns/{key}", {"sendWindow": day})
        )
        assert patched["send_window"] == day | {"timezone": None}
        copy = assert_ok(await api.request("POST", f"/api/v1/campaigns/{key}/duplicate"), 201)
        shown = assert_ok(await api.request("GET", f"/api/v1/campaigns/{copy['id']}"))
        assert shown["send_window"] == day | {"timezone": None}
        cleared = assert_ok(
            await api.request("PATCH", f"/api/v1/campaigns/{key}", {"sendWindow": None})
        )
        assert cleared["send_window"] is None
