"""`Idempotency-Key` on every POST under /api/v1 (docs/http-api.md, "Idempotency").

Before the handler: claim the key, or answer from what the key already holds.
After it: store the answer (any status below 500), or give the key back (5xx, so
a retry runs the request again). The engine keeps the keys in PostgreSQL.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from quart import Response, g, request
from quart_trio import QuartTrio

from api import context
from api.envelope import ApiError, failure, validation_error
from engine.service.errors import DatabaseUnavailable
from engine.service.idempotency import (
    MAX_KEY_LENGTH,
    Claimed,
    InProgress,
    Replay,
    Reused,
    fingerprint,
)

if TYPE_CHECKING:
    from engine.service.engine import Engine

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_CLAIM = "idempotency_claim"


def install(app: QuartTrio, engine: Engine, prefix: str) -> None:
    """Register after the authentication hook: keys are scoped by the caller."""

    @app.before_request
    async def claim_idempotency_key() -> Response | None:
        if request.method != "POST" or not request.path.startswith(prefix + "/"):
            return None
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise validation_error(HEADER, f"must be 1 to {MAX_KEY_LENGTH} characters")
        request_fingerprint = fingerprint(request.method, request.path, await context.body())
        outcome = await engine.idempotency.begin(context.user_id(), key, request_fingerprint)
        match outcome:
            case Claimed():
                setattr(g, _CLAIM, (key, outcome))
                return None
            case Replay(status=status, content_type=content_type, body=body):
                replay = Response(body, status=status, content_type=content_type)
                replay.headers[REPLAYED_HEADER] = "true"
                return replay
            case InProgress():
                busy = failure(
                    ApiError(
                        409,
                        "idempotency_key_in_progress",
                        f"{HEADER}: a request with this key is still in progress; retry shortly",
                        HEADER,
                    )
                )
                busy.headers["Retry-After"] = "1"
                return busy
            case Reused():
                raise ApiError(
                    409,
                    "idempotency_key_reused",
                    f"{HEADER}: already used with another request in the last 24 hours",
                    HEADER,
                )

    @app.after_request
    async def store_idempotent_answer(response: Response) -> Response:
        held: tuple[str, Claimed] | None = g.pop(_CLAIM, None)
        if held is None:
            return response
        key, claim = held
        owner_id = context.user_id()
        try:
            if response.status_code >= 500:
                await engine.idempotency.release(owner_id, key, claim)
            else:
                body = await response.get_data(as_text=False)
                await engine.idempotency.finish(
                    owner_id,
                    key,
                    claim,
                    status=response.status_code,
                    content_type=response.content_type,
                    body=body,
                )
        except DatabaseUnavailable as error:
            # The request's own answer still goes out; the unfinished claim goes
            # stale (engine/service/idempotency.py, STALE_CLAIM) and a retry runs again.
            log.warning("idempotency key not recorded: %s", error)
        return response
