"""Tracked links as recipients follow them (`GET /l/<code>`, engine/core/tracked_links.py)."""

from __future__ import annotations

from engine.clock import WallClock
from engine.core.tracked_links import LinkCodes
from engine.store import links, secrets
from engine.store.database import Database

# A campaign's URLs are those of one text of at most 4096 characters.
_MAX_URL_INDEX = 4096


class Links:
    def __init__(self, db: Database, clock: WallClock) -> None:
        self._db = db
        self._clock = clock
        self._codes: LinkCodes | None = None  # the database's key, read at the first click

    async def follow(self, code: str) -> str | None:
        """The original URL of a code we issued, counting the recipient's first click;
        None for an unknown, forged or tampered code. Its `campaign:stats` comes with
        the campaign's next stats event (docs/socketio-events.md)."""
        if self._codes is None:
            self._codes = LinkCodes(await secrets.callback_key(self._db))
        parsed = self._codes.parse(code)
        if parsed is None or parsed[1] > _MAX_URL_INDEX:
            return None
        recipient_id, index = parsed
        return await links.click(self._db, recipient_id, index, now=self._clock.now())
