"""Contacts of an owner, upserted by phone number."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from engine.store.database import Connection, Database, Record
from engine.store.errors import DuplicatePhone, set_clause


class ContactInput(msgspec.Struct, frozen=True):
    phone: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    company: str | None = None
    tags: list[str] = []
    attributes: dict[str, str] = {}
    opted_out: bool = False


async def upsert_contacts(
    db: Database, owner_id: str, contacts: Sequence[ContactInput], *, now: datetime | None = None
) -> tuple[int, int]:
    """Insert or update contacts by phone, in order, in one statement; returns (created,
    updated), counting every entry: a phone given twice is created by its first entry
    and updated by the later ones.

    An upsert replaces every field, so applying the entries of one phone in order
    leaves its last one: only that one is written (one statement cannot touch a
    row twice), and the others count as updates.
    """
    given = len(contacts)
    latest: dict[str, ContactInput] = {}
    for contact in contacts:
        latest[contact.phone] = contact  # keeps the first position, takes the last value
    contacts = list(latest.values())
    if not contacts:
        return 0, 0
    rows = await db.fetch(
        """INSERT INTO contacts (owner_id, phone, first_name, last_name, email, company, tags,
                                 attributes, opted_out)
           SELECT $1, u.phone, u.first_name, u.last_name, u.email, u.company,
                  coalesce((SELECT array_agg(t) FROM jsonb_array_elements_text(u.tags::jsonb) t), '{}'),
                  u.attributes::jsonb, u.opted_out
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::boolean[])
                AS u(phone, first_name, last_name, email, company, tags, attributes, opted_out)
           ON CONFLICT (owner_id, phone) DO UPDATE SET
               first_name = excluded.first_name, last_name = excluded.last_name,
               email = excluded.email, company = excluded.company, tags = excluded.tags,
               attributes = excluded.attributes, opted_out = excluded.opted_out,
               updated_at = now()
           RETURNING (xmax = 0) AS created""",
        owner_id,
        [c.phone for c in contacts],
        [c.first_name for c in contacts],
        [c.last_name for c in contacts],
        [c.email for c in contacts],
        [c.company for c in contacts],
        # JSON text: asyncpg would read a list of lists as a two-dimensional array.
        [msgspec.json.encode(c.tags).decode() for c in contacts],
        [msgspec.json.encode(c.attributes).decode() for c in contacts],
        [c.opted_out for c in contacts],
    )
    created = sum(1 for r in rows if r["created"])
    return created, given - created


_CONTACT_COLUMNS = frozenset(
    {"phone", "first_name", "last_name", "email", "company", "tags", "attributes", "opted_out"}
)


async def list_contacts(
    db: Database, owner_id: str, *, after: str | None, limit: int, tag: str | None = None
) -> list[Record]:
    return await db.fetch(
        """SELECT * FROM contacts WHERE owner_id = $1 AND ($2::uuid IS NULL OR id > $2::uuid)
             AND ($4::text IS NULL OR tags @> ARRAY[$4::text])
           ORDER BY id LIMIT $3""",
        owner_id,
        after,
        limit,
        tag,
    )


async def get_contact(db: Database, owner_id: str, contact_id: str) -> Record | None:
    return await db.fetchrow(
        "SELECT * FROM contacts WHERE id = $1 AND owner_id = $2", contact_id, owner_id
    )


async def _update_contact(
    conn: Connection, owner_id: str, contact_id: str, changes: dict[str, Any]
) -> Record | None:
    if "phone" in changes:
        taken = await conn.fetchval(
            "SELECT 1 FROM contacts WHERE owner_id = $1 AND phone = $2 AND id <> $3",
            owner_id,
            changes["phone"],
            contact_id,
        )
        if taken:
            raise DuplicatePhone(changes["phone"])
    row: Record | None = await conn.fetchrow(
        f"""UPDATE contacts SET {set_clause(changes, _CONTACT_COLUMNS, 3)}, updated_at = now()
            WHERE id = $1 AND owner_id = $2 RETURNING *""",
        contact_id,
        owner_id,
        *changes.values(),
    )
    return row


async def update_contact(
    db: Database, owner_id: str, contact_id: str, changes: dict[str, Any]
) -> Record | None:
    """None when there is no such contact; DuplicatePhone when the phone is taken."""
    if not changes:
        return await get_contact(db, owner_id, contact_id)
    return await db.transaction(_update_contact, owner_id, contact_id, changes)


async def delete_contact(db: Database, owner_id: str, contact_id: str) -> bool:
    status = await db.execute(
        "DELETE FROM contacts WHERE id = $1 AND owner_id = $2", contact_id, owner_id
    )
    return status.endswith(" 1")
