"""The account event log: the signals WhatsApp sent about an account (template,
quality and account updates, docs/webhooks.md) and what the engine did about each."""

from __future__ import annotations

from engine.core.resource_view import account_event_object
from engine.service.errors import NotFound
from engine.service.page import Page
from engine.store import account_events
from engine.store.database import Database


class AccountEvents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, owner_id: str, account_id: str, *, before: int | None, limit: int) -> Page:
        """Newest first, continuing before the event id `before`. NotFound when the
        account is not the owner's."""
        rows = await account_events.list_events(
            self._db, owner_id, account_id, before=before, limit=limit
        )
        if rows is None:
            raise NotFound(account_id, "Account")
        return Page([account_event_object(r) for r in rows], rows[-1]["id"] if rows else None)
