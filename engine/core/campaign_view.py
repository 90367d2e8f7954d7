"""The campaign object (docs/http-api.md), built from a campaigns row and its counters. Pure.

Shared by the HTTP API and the `campaign:completed` event, so both show the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.core.metrics import CampaignStats, compute_metrics, progress_percent
from engine.events import CampaignStatsChanged


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with `Z`, as the contract writes every time."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stats_from_row(row: Any) -> CampaignStats:
    return CampaignStats(
        pending=int(row["stat_pending"]),
        sent=int(row["stat_sent"]),
        delivered=int(row["stat_delivered"]),
        read=int(row["stat_read"]),
        replied=int(row["stat_replied"]),
        failed=int(row["stat_failed"]),
        in_doubt=int(row["stat_in_doubt"]),
        clicked=int(row["stat_clicked"]),
    )


def processed_count(stats: CampaignStats, total: int) -> int:
    """Recipients in a final state: sent or beyond, or failed."""
    return max(0, total - stats.pending - stats.in_doubt)


def stats_payload(stats: CampaignStats) -> dict[str, int]:
    return {
        "pending": stats.pending,
        "sent": stats.sent,
        "delivered": stats.delivered,
        "read": stats.read,
        "replied": stats.replied,
        "failed": stats.failed,
        "in_doubt": stats.in_doubt,
        "clicked": stats.clicked,
    }


def metrics_payload(stats: CampaignStats, total: int) -> dict[str, float]:
    m = compute_metrics(stats, total)
    return {
        "delivery_rate": m.delivery_rate,
        "read_rate": m.read_rate,
        "reply_rate": m.reply_rate,
        "failure_rate": m.failure_rate,
        "click_rate": m.click_rate,
    }


def stats_changed(row: Any) -> CampaignStatsChanged:
    """`campaign:stats` for a campaign row with its counters (campaigns.campaign_rows)."""
    stats = stats_from_row(row)
    return CampaignStatsChanged(
        campaign_id=str(row["id"]),
        stats=stats_payload(stats),
        metrics=metrics_payload(stats, int(row["total_recipients"])),
    )


def in_doubt_payload(row: Any, in_doubt_timeout: float | None) -> dict[str, Any]:
    """`{count, resolves_at}`: sends whose outcome is unknown, and when the last of
    them is resolved (a webhook may do it sooner; `delivery.on_in_doubt` decides
    how) while the campaign runs. `resolves_at` is null without the timeout."""
    count = int(row["stat_in_doubt"])
    last = row["in_doubt_last_sending_at"] if count else None
    resolves_at = (
        last + timedelta(seconds=in_doubt_timeout)
        if last is not None and in_doubt_timeout is not None
        else None
    )
    return {"count": count, "resolves_at": iso(resolves_at)}


MESSAGING_LIMIT_REASON = (
    "The business portfolio reached its messaging limit (unique users per moving 24 hours);"
    " the rest are sent as the window moves"
)


def deferral_fields(row: Any) -> dict[str, Any]:
    """What the campaign waits for: recipients beyond the portfolio's messaging
    limit (`deferred_*`, with the ETA) and recipients outside their send window
    (`waiting_for_window` while nothing else is pending, `next_window_opens_at`)."""
    limit_count = int(row["deferred_limit_count"])
    window_count = int(row["deferred_window_count"])
    return {
        "send_window": row["send_window"],
        "deferred_count": limit_count,
        "deferred_reason": MESSAGING_LIMIT_REASON if limit_count else None,
        "deferred_until": iso(row["deferred_limit_until"]) if limit_count else None,
        "waiting_for_window": window_count > 0
        and int(row["stat_pending"]) <= window_count + limit_count,
        "next_window_opens_at": iso(row["deferred_window_until"]) if window_count else None,
    }


# A/B variants: (recipients assigned to the variant, their counts), in the variants'
# order; an aggregate over the recipients (engine/store/variants.py), read for one
# campaign's detail only.
VariantCounts = Sequence[tuple[int, CampaignStats]]


def variants_payload(row: Any, counts: VariantCounts | None) -> list[dict[str, Any]]:
    """`[{name, weight, message_content, recipients, stats, metrics}]`, empty without
    variants; the counts are null in an object built without them (lists)."""
    out = []
    for index, variant in enumerate(row["variants"] or []):
        item: dict[str, Any] = {
            "name": variant["name"],
            "weight": variant["weight"],
            "message_content": variant["messageContent"],
            "recipients": None,
            "stats": None,
            "metrics": None,
        }
        if counts is not None and index < len(counts):
            recipients, stats = counts[index]
            item |= {
                "recipients": recipients,
                "stats": stats_payload(stats),
                "metrics": metrics_payload(stats, recipients),
            }
        out.append(item)
    return out


def ab_phase(row: Any) -> str:
    """`not_started`, `sampling` (the sample is being sent), `waiting` (for the
    sample's webhooks, until `decide_at`) or `decided`."""
    if row["ab_winner"] is not None:
        return "decided"
    if row["ab_decide_at"] is not None:
        return "waiting"
    return "sampling" if row["started_at"] is not None else "not_started"


def ab_test_payload(row: Any) -> dict[str, Any] | None:
    test = row["ab_test"]
    if test is None:
        return None
    names = [v["name"] for v in row["variants"]]
    winner, values = row["ab_winner"], row["ab_values"]
    return {
        "sample_share": test["sampleShare"],
        "metric": test["metric"],
        "decide_after_minutes": test["decideAfterMinutes"],
        "phase": ab_phase(row),
        "sample_size": row["ab_sample_size"],
        "decide_at": iso(row["ab_decide_at"]),
        "decided_at": iso(row["ab_decided_at"]),
        "winner": names[winner] if winner is not None else None,
        "values": dict(zip(names, values, strict=True)) if values is not None else None,
    }


def campaign_object(
    row: Any,
    *,
    in_doubt_timeout: float | None = None,
    variant_counts: VariantCounts | None = None,
) -> dict[str, Any]:
    """`row` is a campaigns row with the `stat_*` counter columns (see `engine.store.campaigns`);
    `in_doubt_timeout` is `delivery.in_doubt_timeout`, for `in_doubt.resolves_at`;
    `variant_counts`, each A/B variant's counts (see `variants_payload`)."""
    stats = stats_from_row(row)
    total = int(row["total_recipients"])
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "status": row["status"],
        "account_id": str(row["account_id"]),
        "message_type": row["message_type"],
        "message_content": row["message_content"],
        "media_url": row["media_url"],
        "audience_type": row["audience_type"],
        "audience_config": row["audience_config"],
        "schedule_type": row["schedule_type"],
        "scheduled_at": iso(row["scheduled_at"]),
        "started_at": iso(row["started_at"]),
        "paused_at": iso(row["paused_at"]),
        "pause_reason": row["pause_reason"],
        "completed_at": iso(row["completed_at"]),
        "cancelled_at": iso(row["cancelled_at"]),
        "throttle_config": row["throttle_config"],
        "template_variables": row["template_variables"],
        "track_links": row["track_links"],
        "allow_missing_variables": row["allow_missing_variables"],
        "total_recipients": total,
        # A draft has no recipients yet: nothing is done, rather than "all of nothing".
        "progress": progress_percent(processed_count(stats, total), total)
        if row["recipients_frozen"]
        else 0.0,
        "stats": stats_payload(stats),
        "metrics": metrics_payload(stats, total),
        "in_doubt": in_doubt_payload(row, in_doubt_timeout),
        "variants": variants_payload(row, variant_counts),
        "ab_test": ab_test_payload(row),
        **deferral_fields(row),
        "error": row["error"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
