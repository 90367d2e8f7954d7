"""`campaign-engine watch` shows a tracked-link campaign's clicks, live from `campaign:stats`."""

from __future__ import annotations

from typing import Any

from rich.progress import Progress, TextColumn

from engine.tools.watch import CampaignWatch, clicks_note, summary_table

STATS = {
    "pending": 0,
    "sent": 4,
    "delivered": 4,
    "read": 0,
    "replied": 0,
    "failed": 0,
    "in_doubt": 0,
    "clicked": 0,
}
METRICS = {
    "delivery_rate": 100.0,
    "read_rate": 0.0,
    "reply_rate": 0.0,
    "failure_rate": 0.0,
    "click_rate": 0.0,
}


def _campaign(**fields: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "name": "Offer",
        "status": "running",
        "total_recipients": 4,
        "progress": 100.0,
        "stats": STATS,
        "metrics": METRICS,
        "track_links": True,
    } | fields


def _line(watch: CampaignWatch) -> str:
    [task] = watch.progress.tasks
    line: str = task.fields["status"]
    return line


def test_a_first_click_shows_in_the_line_and_the_table() -> None:
    watch = CampaignWatch(_campaign(), Progress(TextColumn("{task.fields[status]}")))
    assert _line(watch) == "running  sent 4  delivered 4  failed 0  clicked 0 (click rate 0.00%)"
    # What the daemon emits after a recipient's first click.
    watch.apply(
        "campaign:stats",
        {
            "campaignId": "c1",
            "stats": STATS | {"clicked": 1},
            "metrics": METRICS | {"click_rate": 25.0},
        },
    )
    assert _line(watch) == "running  sent 4  delivered 4  failed 0  clicked 1 (click rate 25.00%)"
    rows = dict(zip(*(c.cells for c in summary_table(watch.campaign).columns), strict=True))
    assert rows["clicked"] == "1" and rows["click rate"] == "25.00%"


def test_campaigns_without_tracked_links_show_no_clicks() -> None:
    untracked = _campaign(track_links=False)
    assert clicks_note(untracked) == ""
    watch = CampaignWatch(untracked, Progress(TextColumn("{task.fields[status]}")))
    assert "clicked" not in _line(watch)
    assert "clicked" not in [*summary_table(untracked).columns[0].cells]
