"""`campaign-engine watch` ends with a line per A/B variant and the test's outcome."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from engine.core.campaign_view import metrics_payload, stats_payload
from engine.core.metrics import CampaignStats
from engine.tools.watch import summary_table


def _variant(name: str, recipients: int, stats: CampaignStats | None) -> dict[str, Any]:
    return {
        "name": name,
        "weight": 1,
        "message_content": "Hi",
        "recipients": recipients,
        "stats": stats_payload(stats) if stats else None,
        "metrics": metrics_payload(stats, recipients) if stats else None,
    }


def test_the_summary_has_a_line_per_variant_and_the_winner() -> None:
    stats = CampaignStats(sent=10, delivered=10, read=5, replied=1)
    campaign = {
        "name": "AB",
        "status": "completed",
        "total_recipients": 20,
        "progress": 100.0,
        "stats": stats_payload(stats),
        "metrics": metrics_payload(stats, 20),
        "variants": [
            _variant("Short", 12, CampaignStats(sent=6, delivered=6, read=4)),
            _variant("Long", 8, CampaignStats(sent=4, delivered=4, read=1, replied=1)),
        ],
        "ab_test": {"phase": "decided", "winner": "Short", "metric": "read_rate"},
    }
    console = Console(record=True, width=200)
    console.print(summary_table(campaign))
    text = console.export_text()
    assert "variant Short" in text and "12 recipients, sent 6, read 66.67%" in text
    assert "variant Long" in text and "replied 25.00%" in text
    assert "decided: Short by read_rate" in text
    # Without counts (a list's object) and without variants: no such lines.
    campaign["variants"] = [_variant("Short", 0, None)]
    campaign["ab_test"] = None
    console = Console(record=True, width=200)
    console.print(summary_table(campaign))
    assert "variant" not in console.export_text()
