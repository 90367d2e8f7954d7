"""Segments: saved audiences by tags and/or contact ids, with their current size."""

from __future__ import annotations

from typing import Any

from engine.core.resource_view import segment_object
from engine.service.errors import NotFound
from engine.service.page import Page
from engine.store import segments
from engine.store.database import Database


class Segments:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, owner_id: str, *, name: str, tags: list[str], contact_ids: list[str]
    ) -> dict[str, Any]:
        """Only the non-empty criteria are stored. Returns `{id, name, size}`."""
        segment_filter: dict[str, Any] = {}
        if tags:
            segment_filter["tags"] = tags
        if contact_ids:
            segment_filter["contactIds"] = contact_ids
        row = await segments.create_segment_sized(
            self._db, owner_id, name=name, filter=segment_filter
        )
        return {"id": str(row["id"]), "name": row["name"], "size": int(row["size"])}

    async def list(self, owner_id: str, *, after: str | None, limit: int) -> Page:
        rows = await segments.list_segments(self._db, owner_id, after=after, limit=limit)
        return Page([segment_object(r) for r in rows], str(rows[-1]["id"]) if rows else None)

    async def get(self, owner_id: str, segment_id: str) -> dict[str, Any]:
        row = await segments.get_segment(self._db, owner_id, segment_id)
        if row is None:
            raise NotFound(segment_id, "Segment")
        return segment_object(row)

    async def delete(self, owner_id: str, segment_id: str) -> None:
        if not await segments.delete_segment(self._db, owner_id, segment_id):
            raise NotFound(segment_id, "Segment")
