"""Tracked links: a click resolves its URL and marks the recipient (engine/core/tracked_links.py)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from engine.store.database import Database

# One statement: the URL the code names, and the recipient's first click. A repeat
# click writes nothing (no row version, no counter trigger work).
_CLICK = """WITH target AS (
        SELECT r.id, r.campaign_id, r.clicked_at, c.tracked_urls ->> $2::int AS url
        FROM campaign_recipients r JOIN campaigns c ON c.id = r.campaign_id
        WHERE r.id = $1 AND c.track_links
    ), first_click AS (
        UPDATE campaign_recipients r SET clicked_at = $3
        FROM target t
        WHERE r.id = t.id AND t.url IS NOT NULL AND r.clicked_at IS NULL
        RETURNING r.id
    )
    SELECT url, campaign_id::text, EXISTS (SELECT 1 FROM first_click) AS first
    FROM target"""


class Click(msgspec.Struct, frozen=True):
    url: str
    campaign_id: str
    first: bool  # the recipient's first click: `clicked` counted it


async def click(db: Database, recipient_id: int, url_index: int, *, now: datetime) -> Click | None:
    """The link (recipient, index) names, counting the recipient's first click;
    None when there is no such recipient or link."""
    row = await db.fetchrow(_CLICK, recipient_id, url_index, now)
    if row is None or row["url"] is None:
        return None
    return Click(url=row["url"], campaign_id=row["campaign_id"], first=row["first"])
