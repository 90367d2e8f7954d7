"""When a campaign reports progress and stats, and with which counts. Pure.

`campaign:progress` goes out every `progress_every` processed recipients and
`campaign:stats` every `stats_every` (docs/socketio-events.md). Outcomes are
stored in batches, so one batch may cross several thresholds: each event must
carry the counts as they were at its own threshold, not the batch's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from engine.core.metrics import CampaignStats

Final = Literal["sent", "failed"]


class Milestone(msgspec.Struct, frozen=True):
    processed: int
    stats: CampaignStats  # the counts when `processed` recipients were final
    progress: bool  # a progress threshold
    stats_due: bool  # a stats threshold


def crosses_threshold(before: int, finals: int, *, progress_every: int, stats_every: int) -> bool:
    """Whether going from `before` to `before + finals` processed crosses any threshold
    (the caller reads the stored counts only then)."""
    after = before + finals
    return after // progress_every != before // progress_every or (
        after // stats_every != before // stats_every
    )


def milestones(
    before: int,
    finals: Sequence[Final],
    latest: CampaignStats,
    *,
    progress_every: int,
    stats_every: int,
) -> list[Milestone]:
    """The thresholds crossed by `finals` (the batch's final outcomes, in order)
    after `before` processed, each with the counts at that moment, derived from
    `latest` (the stored counts just after the batch).

    Counts that the batch did not change (delivered, read, ... from webhooks) are
    taken as they are in `latest`.
    """
    sent_after = sum(1 for outcome in finals if outcome == "sent")
    failed_after = len(finals) - sent_after
    found: list[Milestone] = []
    processed = before
    for outcome in finals:
        processed += 1
        if outcome == "sent":
            sent_after -= 1
        else:
            failed_after -= 1
        progress, stats_due = processed % progress_every == 0, processed % stats_every == 0
        if not (progress or stats_due):
            continue
        at_threshold = msgspec.structs.replace(
            latest,
            sent=latest.sent - sent_after,
            failed=latest.failed - failed_after,
            pending=latest.pending + sent_after + failed_after,
        )
        found.append(Milestone(processed, at_threshold, progress, stats_due))
    return found
