"""Tracked links as recipients follow them (`GET /l/<code>`, engine/core/tracked_links.py).

A recipient's first click changes the campaign's `clicked`, which clients learn
from `campaign:stats` (docs/socketio-events.md). The redirect waits only for the
click's own statement: the counts are read and published afterwards by
`announce_clicks`, at most once per `CLICK_STATS_INTERVAL` for a burst of clicks.
"""

from __future__ import annotations

import logging

import trio

from engine.actors.broadcaster import Broadcaster
from engine.clock import WallClock
from engine.core.campaign_view import stats_changed
from engine.core.tracked_links import LinkCodes
from engine.messages import CampaignEvent
from engine.store import campaigns, links, secrets, statuses
from engine.store.database import Database

log = logging.getLogger(__name__)

# A campaign's URLs are those of one text of at most 4096 characters.
_MAX_URL_INDEX = 4096
# Seconds between two announcements of clicks: a burst on one campaign gives one
# `campaign:stats` per interval, the last click always included.
CLICK_STATS_INTERVAL = 0.25
# After a database error: the clicks are stored, only their announcement waits.
_RETRY_SECONDS = 5.0


class Links:
    def __init__(self, db: Database, clock: WallClock, broadcaster: Broadcaster) -> None:
        self._db = db
        self._clock = clock
        self._broadcaster = broadcaster
        self._codes: LinkCodes | None = None  # the database's key, read at the first click
        # Campaigns with first clicks not yet announced; `announce_clicks` takes them.
        self._clicked: set[str] = set()
        self._click_arrived = trio.Event()

    async def follow(self, code: str) -> str | None:
        """The original URL of a code we issued, counting the recipient's first click;
        None for an unknown, forged or tampered code."""
        if self._codes is None:
            self._codes = LinkCodes(await secrets.callback_key(self._db))
        parsed = self._codes.parse(code)
        if parsed is None or parsed[1] > _MAX_URL_INDEX:
            return None
        recipient_id, index = parsed
        click = await links.click(self._db, recipient_id, index, now=self._clock.now())
        if click is None:
            return None
        if click.first:
            # Announced by `announce_clicks`; nothing here can fail or wait.
            self._clicked.add(click.campaign_id)
            self._click_arrived.set()
        return click.url

    async def announce_clicks(self) -> None:
        """Publish `campaign:stats` for the campaigns first clicks changed; never returns.

        The counts are read after the clicks are taken, so a click that arrives
        while they are read is announced in the next round."""
        while True:
            await self._click_arrived.wait()
            self._click_arrived = trio.Event()
            clicked, self._clicked = self._clicked, set()
            try:
                rows = await campaigns.campaign_rows(self._db, sorted(clicked))
            except statuses.DATABASE_ERRORS as error:
                # The clicks are stored; their counts come with the next announcement.
                log.warning(
                    "clicks: counts of %d campaigns not announced (%s: %s)",
                    len(clicked),
                    type(error).__name__,
                    error,
                )
                self._clicked |= clicked
                self._click_arrived.set()
                await trio.sleep(_RETRY_SECONDS)
                continue
            for row in rows:
                self._broadcaster.publish(CampaignEvent(row["owner_id"], stats_changed(row)))
            await trio.sleep(CLICK_STATS_INTERVAL)
