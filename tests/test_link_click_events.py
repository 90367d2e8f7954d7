"""A recipient's first click announces the campaign's counts in `campaign:stats`,
without waiting for the campaign's next stats event (which may never come)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from engine.messages import CampaignEvent, Lagged
from engine.service.links import CLICK_STATS_INTERVAL
from tests.api_helpers import Harness, gateway
from tests.test_tracked_links import _links, _sent_campaign, linked

__all__ = ["gateway", "linked"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


async def _delivered(harness: Harness, campaign_id: str) -> None:
    """As the status webhooks would say, so click_rate has a denominator."""
    await harness.db.execute(
        """UPDATE campaign_recipients SET status = 'delivered', delivered_at = now()
           WHERE campaign_id = $1""",
        campaign_id,
    )


async def _next_stats(
    events: trio.MemoryReceiveChannel[CampaignEvent | Lagged], campaign_id: str
) -> dict[str, Any]:
    async for event in events:
        if (
            isinstance(event, CampaignEvent)
            and event.name == "campaign:stats"
            and event.payload["campaignId"] == campaign_id
        ):
            return event.payload
    raise AssertionError("the broadcaster closed")


def _code(link: str) -> str:
    return urlsplit(link).path.removeprefix("/l/")


async def test_a_first_click_announces_stats_and_a_repeat_counts_nothing(
    linked: Harness,
) -> None:
    with trio.fail_after(60):
        campaign_id, bodies = await _sent_campaign(linked, 2)
        await _delivered(linked, campaign_id)
        (_, first_body), (_, second_body) = sorted(bodies.items())
        first_links, second_links = _links(first_body), _links(second_body)
        async with linked.engine.broadcaster.subscribe() as events:
            click = await linked.request("GET", urlsplit(first_links[0]).path, user=None)
            assert click.status == 302
            announced = await _next_stats(events, campaign_id)
            assert announced["stats"]["clicked"] == 1
            assert announced["metrics"]["click_rate"] == 50.0

            # The same recipient again, on both links: redirected, not counted.
            for link in first_links[:2]:
                again = await linked.request("GET", urlsplit(link).path, user=None)
                assert again.status == 302
            other = await linked.request("GET", urlsplit(second_links[0]).path, user=None)
            assert other.status == 302
            # The next announcement is the other recipient's click: the repeats added none.
            announced = await _next_stats(events, campaign_id)
            assert announced["stats"]["clicked"] == 2
            assert announced["metrics"]["click_rate"] == 100.0


async def test_a_burst_of_clicks_is_announced_coalesced_ending_with_the_last(
    linked: Harness,
) -> None:
    size = 12
    with trio.fail_after(60):
        campaign_id, bodies = await _sent_campaign(linked, size)
        await _delivered(linked, campaign_id)
        codes = [_code(_links(body)[0]) for _, body in sorted(bodies.items())]
        async with linked.engine.broadcaster.subscribe() as events:
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for code in codes:
                    nursery.start_soon(linked.engine.links.follow, code)
            elapsed = trio.current_time() - started
            clicked = []
            while not clicked or clicked[-1] < size:
                clicked.append((await _next_stats(events, campaign_id))["stats"]["clicked"])
        # One announcement right away, then at most one per interval while clicks come.
        assert len(clicked) <= 2 + math.ceil(elapsed / CLICK_STATS_INTERVAL)
        assert clicked == sorted(clicked) and clicked[-1] == size
