"""A running daemon for API tests: the real engine on the real PostgreSQL, the
HTTP API and Socket.IO on a loopback port, a scripted gateway, and an HTTP client.

Use the `api` fixture (import it into the test module).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

import jwt
import msgspec
import pytest
import trio

from api.auth import issue_token
from api.server import serve_api
from engine.service.engine import Engine, open_engine
from engine.settings import Settings, load_settings
from engine.store.database import Database
from engine.transport.http1 import HTTPConnection, Origin
from tests.engine_helpers import JWT_SECRET
from tests.fake_gateway import ScriptedGateway

SECRET = JWT_SECRET
APP_SECRET = "app-secret"
VERIFY_TOKEN = "verify-me"
USER = "user-1"
OTHER_USER = "user-2"

BASE_ENVIRONMENT = {
    "ENGINE_JWT_SECRET": SECRET,
    "WHATSAPP_APP_SECRET": APP_SECRET,
    "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
    "DATABASE_URL": "",
    "REDIS_URL": "",
    "CAMPAIGN_ENGINE_SERVER_MAX_BODY_BYTES": str(4 * 1024 * 1024),
    "CAMPAIGN_ENGINE_ENGINE_PROGRESS_EVERY": "5",
    "CAMPAIGN_ENGINE_ENGINE_STATS_EVERY": "5",
    "CAMPAIGN_ENGINE_WEBHOOKS_FLUSH_INTERVAL_MS": "10",
    "CAMPAIGN_ENGINE_SERVER_SHUTDOWN_GRACE_SECONDS": "1",
}


class Reply(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def data(self) -> Any:
        return self.json()["data"]


class Harness:
    """The daemon under test and a client for it."""

    def __init__(
        self, engine: Engine, settings: Settings, gateway: ScriptedGateway, db: Database, port: int
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.gateway = gateway
        self.db = db
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"

    def token(self, user: str = USER, ttl: int | None = 3600) -> str:
        return issue_token(SECRET, user, ttl)

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        user: str | None = USER,
        token: str | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        head: list[tuple[bytes, bytes]] = [(b"connection", b"close")]
        if token is None and user is not None:
            token = self.token(user)
        if token is not None:
            head.append((b"authorization", f"Bearer {token}".encode()))
        if json is not None:
            body = msgspec.json.encode(json)
        if body is not None:
            head.append((b"content-type", b"application/json"))
        for name, value in (headers or {}).items():
            head.append((name.lower().encode(), value.encode()))
        connection = HTTPConnection(Origin("http", "127.0.0.1", self.port), read_timeout=30)
        try:
            response = await connection.request(method, path, head, body or b"")
        finally:
            await connection.aclose()
        return Reply(
            response.status,
            {k.decode(): v.decode() for k, v in response.headers},
            response.body,
        )

    # --- builders over HTTP -----------------------------------------------------------

    async def make_account(self, user: str = USER, **fields: Any) -> str:
        body = {"name": "Main", "phoneNumberId": "PN1", "accessToken": "tok-123"} | fields
        reply = await self.request("POST", "/api/v1/accounts", body, user=user)
        assert reply.status == 201, reply.body
        return str(reply.data["id"])

    async def make_contacts(self, count: int, user: str = USER, start: int = 0) -> None:
        contacts = [
            {
                "phone": f"+1555{i:07d}",
                "firstName": f"First{i}",
                "tags": ["vip" if i % 2 else "all"],
            }
            for i in range(start, start + count)
        ]
        reply = await self.request("POST", "/api/v1/contacts", {"contacts": contacts}, user=user)
        assert reply.status == 200, reply.body

    async def make_campaign(
        self, account_id: str, user: str = USER, **fields: Any
    ) -> dict[str, Any]:
        body = {
            "accountId": account_id,
            "name": "Launch",
            "messageType": "text",
            "messageContent": "Hi {{firstName}}",
            "audienceType": "all",
            "audienceConfig": {},
            "scheduleType": "manual",
            "throttleConfig": {"messagesPerMinute": 60000, "batchSize": 10},
        } | fields
        reply = await self.request("POST", "/api/v1/campaigns", body, user=user)
        assert reply.status == 201, reply.body
        campaign: dict[str, Any] = reply.data
        return campaign


def expired_token(user: str = USER) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")


def api_settings(**overrides: str) -> Settings:
    return load_settings(None, BASE_ENVIRONMENT | overrides)


async def open_harness(
    db: Database,
    settings: Settings,
    gateway: ScriptedGateway,
    *,
    instance_id: str = "api-test",
    task_status: trio.TaskStatus[Harness] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_engine(db, settings, gateway, instance_id=instance_id) as engine:
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(
                partial(serve_api, engine, settings, host="127.0.0.1", port=0)
            )
            task_status.started(Harness(engine, settings, gateway, db, port))
            await trio.sleep_forever()


@pytest.fixture
def gateway() -> ScriptedGateway:
    return ScriptedGateway()


@pytest.fixture
async def api(db: Database, gateway: ScriptedGateway) -> AsyncIterator[Harness]:
    async with trio.open_nursery() as nursery:
        harness: Harness = await nursery.start(open_harness, db, api_settings(), gateway)
        yield harness
        nursery.cancel_scope.cancel()
