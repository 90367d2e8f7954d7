"""While the database is unreachable the HTTP server keeps answering: `/healthz` and
every route that needs the database say 503, and all is well again once it is back."""

from __future__ import annotations

import trio

from engine.store.database import Database
from tests.api_helpers import Harness, api_settings, open_harness
from tests.fake_gateway import ScriptedGateway
from tests.outage_helpers import CutOffDatabase


async def test_a_database_outage_answers_503_and_passes(db: Database) -> None:
    outage = CutOffDatabase(db)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            api: Harness = await nursery.start(
                open_harness, outage, api_settings(), ScriptedGateway()
            )
            assert (await api.request("GET", "/healthz", user=None)).status == 200
            outage.cut = True
            health = await api.request("GET", "/healthz", user=None)
            assert health.status == 503
            assert health.json() == {"status": "unavailable", "database": "unreachable"}
            listed = await api.request("GET", "/api/v1/campaigns")
            assert listed.status == 503
            assert listed.json()["error"]["code"] == "database_unavailable"
            assert listed.headers["retry-after"] == "5"
            outage.cut = False
            assert (await api.request("GET", "/healthz", user=None)).status == 200
            assert (await api.request("GET", "/api/v1/campaigns")).status == 200
            nursery.cancel_scope.cancel()
