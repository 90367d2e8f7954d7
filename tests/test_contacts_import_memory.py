"""An import's body is released from its request once read (api/routes/contacts.py).

A request object can outlive its answer by minutes: asyncpg schedules asyncio timers
while serving it, and each keeps the contextvars.Context it was made in, which holds
Quart's request context. A body left on the request was memory held per import.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from quart import Response, request

from api.app import create_app
from api.auth import issue_token
from engine.service.engine import open_engine
from engine.store.database import Database
from tests.api_helpers import SECRET, USER, api_settings, gateway
from tests.fake_gateway import ScriptedGateway

__all__ = ["gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


async def test_an_import_leaves_no_body_on_its_request_and_still_replays(
    db: Database, gateway: ScriptedGateway
) -> None:
    settings = api_settings()
    async with open_engine(db, settings, gateway, instance_id="import-memory") as engine:
        app = create_app(engine, settings)
        held: list[Any] = []

        @app.after_request
        async def hold_the_request(response: Response) -> Response:
            # As a lingering timer's context does: the request outlives its answer.
            held.append(cast(Any, request)._get_current_object())
            return response

        contacts = [{"phone": f"+1555{i:07d}", "firstName": f"F{i}"} for i in range(2_000)]
        headers = {
            "Authorization": f"Bearer {issue_token(SECRET, USER, 3600)}",
            "Idempotency-Key": "import-1",
        }
        client = app.test_client()
        reply = await client.post("/api/v1/contacts", json={"contacts": contacts}, headers=headers)
        assert reply.status_code == 200, await reply.get_data()
        assert (await reply.get_json())["data"] == {"created": 2_000, "updated": 0, "rejected": []}
        assert await held[0].get_data() == b""

        # The key's fingerprint was taken from the body before it was released.
        again = await client.post("/api/v1/contacts", json={"contacts": contacts}, headers=headers)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert (await again.get_json())["data"]["created"] == 2_000
        other = {"contacts": contacts[:1]}
        reused = await client.post("/api/v1/contacts", json=other, headers=headers)
        assert reused.status_code == 409
        assert (await reused.get_json())["error"]["code"] == "idempotency_key_reused"
