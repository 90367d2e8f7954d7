"""Contacts of an owner, upserted by phone number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from engine.core.resource_view import contact_object
from engine.service.errors import NotFound
from engine.service.page import Page
from engine.store import contacts
from engine.store.contacts import ContactInput
from engine.store.database import Database


class UpsertResult(msgspec.Struct, frozen=True):
    created: int
    updated: int


class Contacts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, owner_id: str, entries: Sequence[ContactInput]) -> UpsertResult:
        """Insert or update by phone, in one statement."""
        created, updated = await contacts.upsert_contacts(self._db, owner_id, entries)
        return UpsertResult(created, updated)

    async def list(
        self, owner_id: str, *, after: str | None, limit: int, tag: str | None = None
    ) -> Page:
        rows = await contacts.list_contacts(self._db, owner_id, after=after, limit=limit, tag=tag)
        return Page([contact_object(r) for r in rows], str(rows[-1]["id"]) if rows else None)

    async def get(self, owner_id: str, contact_id: str) -> dict[str, Any]:
        row = await contacts.get_contact(self._db, owner_id, contact_id)
        if row is None:
            raise NotFound(contact_id, "Contact")
        return contact_object(row)

    async def update(
        self, owner_id: str, contact_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """`changes`: field of ContactInput -> new value. NotFound, DuplicatePhone."""
        row = await contacts.update_contact(self._db, owner_id, contact_id, changes)
        if row is None:
            raise NotFound(contact_id, "Contact")
        return contact_object(row)

    async def delete(self, owner_id: str, contact_id: str) -> None:
        if not await contacts.delete_contact(self._db, owner_id, contact_id):
            raise NotFound(contact_id, "Contact")


__all__ = ["ContactInput", "Contacts", "UpsertResult"]
