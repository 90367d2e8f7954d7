"""Idempotency keys of POST requests (docs/http-api.md, "Idempotency").

A request carrying a key first claims it (`begin`); the claim is in PostgreSQL, so
every daemon on the database sees it. The caller then runs the request and either
stores its answer (`finish`) or gives the key back (`release`, for answers that
must not be replayed). Keys are scoped per owner and live 24 hours.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import msgspec

from engine.store import idempotency
from engine.store.database import Database

KEY_TTL = timedelta(hours=24)
# A claim still unfinished after this long belongs to a request that will never
# finish (its daemon died); a retry may take the key over. Requests end well
# within it: the largest body is a few MB of contacts.
STALE_CLAIM = timedelta(seconds=60)
MAX_KEY_LENGTH = 255


class Claimed(msgspec.Struct, frozen=True):
    """This request holds the key; pass `token` to `finish` or `release`."""

    token: uuid.UUID


class Replay(msgspec.Struct, frozen=True):
    """The first request with this key and body finished: answer as it did."""

    status: int
    content_type: str | None
    body: bytes


class InProgress(msgspec.Struct, frozen=True):
    """The first request with this key and body is still running."""


class Reused(msgspec.Struct, frozen=True):
    """The key was used with another method, path or body."""


Outcome = Claimed | Replay | InProgress | Reused


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """sha256 of the request; the separators keep method and path apart from the body."""
    return hashlib.sha256(f"{method}\n{path}\n".encode() + body).digest()


class Idempotency:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def begin(self, owner_id: str, key: str, request_fingerprint: bytes) -> Outcome:
        token = uuid.uuid4()
        existing = await idempotency.claim(
            self._db,
            owner_id,
            key,
            request_fingerprint,
            token,
            ttl=KEY_TTL,
            stale_after=STALE_CLAIM,
        )
        if existing is None:
            return Claimed(token)
        if bytes(existing["fingerprint"]) != request_fingerprint:
            return Reused()
        if existing["status"] is None:
            return InProgress()
        return Replay(int(existing["status"]), existing["content_type"], bytes(existing["body"]))

    async def finish(
        self,
        owner_id: str,
        key: str,
        claim: Claimed,
        *,
        status: int,
        content_type: str | None,
        body: bytes,
    ) -> None:
        await idempotency.finish(
            self._db,
            owner_id,
            key,
            claim.token,
            status=status,
            content_type=content_type,
            body=body,
        )

    async def release(self, owner_id: str, key: str, claim: Claimed) -> None:
        await idempotency.release(self._db, owner_id, key, claim.token)
