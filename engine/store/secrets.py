"""Secrets the database keeps for the engine (created by the migrations)."""

from __future__ import annotations

from engine.store.database import Database


async def callback_key(db: Database) -> bytes:
    """The per-database key of the callback references (migration 0002)."""
    key: str = await db.fetchval("SELECT key FROM callback_reference_key")
    return bytes.fromhex(key)
