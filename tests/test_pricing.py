"""Cost: the `pricing` object of status webhooks is kept per recipient, and a campaign
shows its messages per pricing category."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.api_helpers import Harness, api, gateway
from tests.test_api_webhooks import T0, completed_campaign, notification, post, stats_event, status

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

MARKETING = {"billable": True, "pricing_model": "PMP", "category": "marketing", "type": "regular"}
SERVICE = {
    "billable": False,
    "pricing_model": "PMP",
    "category": "service",
    "type": "free_customer_service",
}


async def test_pricing_is_stored_per_recipient_and_counted_by_category(api: Harness) -> None:
    with trio.fail_after(30):
        campaign_id, sent = await completed_campaign(api, 4)
        (_, a), (_, b), (_, c), (_, unpriced) = sent
        async with api.engine.broadcaster.subscribe() as events:
            body = notification(
                [
                    status(a, "sent", T0, pricing=MARKETING),
                    status(a, "delivered", T0 + 1, pricing=MARKETING),  # the same message
                    status(b, "delivered", T0, pricing=MARKETING),
                    status(c, "read", T0, pricing=SERVICE),
                    status(c, "read", T0, pricing="unreadable"),  # the status still counts
                ]
            )
            assert (await post(api, body)).status == 200
            await stats_event(events, campaign_id, delivered=3)
        shown = await api.request("GET", f"/api/v1/campaigns/{campaign_id}")
        recipients = await api.request("GET", f"/api/v1/campaigns/{campaign_id}/recipients")

    assert shown.data["pricing"] == {
        "marketing": {"messages": 2, "billable": 2},
        "service": {"messages": 1, "billable": 0},
    }
    priced: dict[str, Any] = {r["provider_message_id"]: r["pricing"] for r in recipients.data}
    assert priced[a] == MARKETING and priced[c] == SERVICE
    assert priced[unpriced] is None
