"""`campaign-engine watch` says what a running campaign waits for."""

from __future__ import annotations

from rich.progress import Progress, TextColumn

from engine.tools.watch import CampaignWatch, waiting_note


def test_the_watch_line_names_the_wait_and_its_end() -> None:
    running = {"status": "running"}
    assert waiting_note(running) == ""
    limited = running | {"deferred_until": "2026-03-29T07:00:00.000Z"}
    assert waiting_note(limited) == (
        "  waiting for the messaging limit until 2026-03-29T07:00:00.000Z"
    )
    window = running | {"waiting_for_window": True, "next_window_opens_at": "2026-03-29T13:00Z"}
    assert waiting_note(window) == "  waiting for the send window until 2026-03-29T13:00Z"
    assert waiting_note(window | {"status": "completed"}) == ""


def test_deferred_events_set_what_the_line_shows() -> None:
    campaign = {
        "id": "c1",
        "name": "Night",
        "status": "running",
        "total_recipients": 10,
        "progress": 0.0,
        "stats": {"sent": 0, "delivered": 0, "failed": 0},
    }
    watch = CampaignWatch(campaign, Progress(TextColumn("{task.fields[status]}")))
    until = "2026-03-29T07:00:00.000Z"
    watch.apply(
        "campaign:deferred",
        {"campaignId": "c1", "reason": "send_window", "deferredUntil": until, "count": 10},
    )
    assert waiting_note(watch.campaign) == f"  waiting for the send window until {until}"
    watch.apply(
        "campaign:deferred",
        {"campaignId": "c1", "reason": "messaging_limit", "deferredUntil": until, "count": 4},
    )
    assert watch.campaign["deferred_count"] == 4
    assert waiting_note(watch.campaign) == f"  waiting for the messaging limit until {until}"
