"""Segments: saved audiences (tags and contact ids), with their current size."""

from __future__ import annotations

from typing import Any

from engine.store.database import Connection, Database, Record


async def create_segment(
    db: Database, owner_id: str, *, name: str, filter: dict[str, Any]
) -> Record:
    row = await db.fetchrow(
        "INSERT INTO segments (owner_id, name, filter) VALUES ($1, $2, $3) RETURNING *",
        owner_id,
        name,
        filter,
    )
    assert row is not None
    return row


# Contacts an audience reaches now: not opted out, matching everyone, the tags or the ids.
_AUDIENCE_SIZE = """SELECT count(*) FROM contacts k
    WHERE k.owner_id = $1 AND NOT k.opted_out
      AND ($2::boolean
           OR k.tags && coalesce($3::text[], '{}')
           OR k.id = ANY(coalesce($4::uuid[], '{}')))"""


_SEGMENT_WITH_SIZE = """SELECT s.*, (SELECT count(*) FROM contacts k
        WHERE k.owner_id = s.owner_id AND NOT k.opted_out
          AND (k.tags && ARRAY(SELECT jsonb_array_elements_text(coalesce(s.filter -> 'tags', '[]')))
               OR k.id = ANY(ARRAY(SELECT jsonb_array_elements_text(
                                        coalesce(s.filter -> 'contactIds', '[]'))::uuid)))
    ) AS size
    FROM segments s"""


async def _create_segment_sized(
    conn: Connection, owner_id: str, name: str, filter: dict[str, Any]
) -> Record:
    segment_id = await conn.fetchval(
        "INSERT INTO segments (owner_id, name, filter) VALUES ($1, $2, $3) RETURNING id",
        owner_id,
        name,
        filter,
    )
    row: Record | None = await conn.fetchrow(f"{_SEGMENT_WITH_SIZE} WHERE s.id = $1", segment_id)
    assert row is not None
    return row


async def create_segment_sized(
    db: Database, owner_id: str, *, name: str, filter: dict[str, Any]
) -> Record:
    """Like `create_segment`, with a `size` column: the contacts it matches now."""
    return await db.transaction(_create_segment_sized, owner_id, name, filter)


async def list_segments(
    db: Database, owner_id: str, *, after: str | None, limit: int
) -> list[Record]:
    return await db.fetch(
        f"""{_SEGMENT_WITH_SIZE} WHERE s.owner_id = $1 AND ($2::uuid IS NULL OR s.id > $2::uuid)
            ORDER BY s.id LIMIT $3""",
        owner_id,
        after,
        limit,
    )


async def get_segment(db: Database, owner_id: str, segment_id: str) -> Record | None:
    return await db.fetchrow(
        f"{_SEGMENT_WITH_SIZE} WHERE s.id = $1 AND s.owner_id = $2", segment_id, owner_id
    )


async def delete_segment(db: Database, owner_id: str, segment_id: str) -> bool:
    status = await db.execute(
        "DELETE FROM segments WHERE id = $1 AND owner_id = $2", segment_id, owner_id
    )
    return status.endswith(" 1")


async def _audience_size(
    conn: Connection, owner_id: str, audience_type: str, audience_config: dict[str, Any]
) -> int:
    tags: list[str] | None = None
    ids: list[str] | None = None
    if audience_type == "segment":
        segment_filter = await conn.fetchval(
            "SELECT filter FROM segments WHERE id = $1::uuid AND owner_id = $2",
            audience_config.get("segmentId"),
            owner_id,
        )
        if segment_filter is None:
            return 0
        tags, ids = segment_filter.get("tags"), segment_filter.get("contactIds")
    elif audience_type == "tags":
        tags = audience_config.get("tags")
    elif audience_type == "contacts":
        ids = audience_config.get("contactIds")
    size: int = await conn.fetchval(_AUDIENCE_SIZE, owner_id, audience_type == "all", tags, ids)
    return size
