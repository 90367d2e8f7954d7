"""`campaign-engine watch`: a subprocess follows a campaign of an in-process daemon (real
PostgreSQL, simulator as the Cloud API) from start to finish and prints the final figures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from api.auth import issue_token
from engine.settings import load_settings
from engine.tools.demo import SIMULATOR_URL_PREFIX, Stack, serve_with_simulator
from engine.transport.http1 import HTTPConnection, split_url

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN_ENGINE = Path(sys.executable).parent / "campaign-engine"
SECRET = "watch-test-secret-of-at-least-32-bytes"
USER = "watcher"

ENVIRONMENT = {
    "ENGINE_JWT_SECRET": SECRET,
    "WHATSAPP_APP_SECRET": "watch-app-secret",
    "REDIS_URL": "",
    "CAMPAIGN_ENGINE_ENGINE_PROGRESS_EVERY": "10",
    "CAMPAIGN_ENGINE_ENGINE_STATS_EVERY": "10",
    "CAMPAIGN_ENGINE_SERVER_SHUTDOWN_GRACE_SECONDS": "1",
    "CAMPAIGN_ENGINE_LOGGING_LEVEL": "WARNING",
    "CAMPAIGN_ENGINE_WHATSAPP_ALLOWED_API_URLS": SIMULATOR_URL_PREFIX,
}


class Daemon:
    """An in-process daemon with a simulator, and a JSON client for its API."""

    def __init__(self, stack: Stack, user: str = USER) -> None:
        self.stack = stack
        self.url = stack.listening.url
        self.token = issue_token(SECRET, user, 3600)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        origin, _ = split_url(self.url + "/")
        connection = HTTPConnection(origin, read_timeout=30)
        headers = [(b"authorization", f"Bearer {self.token}".encode())]
        if body is not None:
            headers.append((b"content-type", b"application/json"))
        try:
            response = await connection.request(
                method, path, headers, b"" if body is None else msgspec.json.encode(body)
            )
        finally:
            await connection.aclose()
        document = msgspec.json.decode(response.body)
        assert response.status < 300, (method, path, response.status, document)
        return document["data"]

    async def text(self, path: str) -> str:
        origin, _ = split_url(self.url + "/")
        connection = HTTPConnection(origin, read_timeout=30)
        try:
            response = await connection.request("GET", path, [])
        finally:
            await connection.aclose()
        return response.body.decode()

    async def make_account(self) -> str:
        account = await self.call(
            "POST",
            "/api/v1/accounts",
            {
                "name": "Test account",
                "phoneNumberId": "4242",
                "accessToken": "token",
                "apiUrl": self.stack.simulator.api_url,
                "messagesPerSecond": 1000,
            },
        )
        return str(account["id"])

    async def make_contacts(self, count: int) -> None:
        contacts = [{"phone": f"+1777{i:07d}", "firstName": f"C{i}"} for i in range(count)]
        await self.call("POST", "/api/v1/contacts", {"contacts": contacts})

    async def make_campaign(self, account_id: str, name: str, per_minute: int) -> str:
        campaign = await self.call(
            "POST",
            "/api/v1/campaigns",
            {
                "accountId": account_id,
                "name": name,
                "messageType": "text",
                "messageContent": "Hello {{firstName}}",
                "audienceType": "all",
                "scheduleType": "manual",
                "throttleConfig": {"messagesPerMinute": per_minute},
            },
        )
        return str(campaign["id"])

    async def socket_clients(self) -> int:
        for line in (await self.text("/metrics")).splitlines():
            if line.startswith("campaign_engine_socketio_clients "):
                return int(float(line.split()[1]))
        raise AssertionError("no campaign_engine_socketio_clients in /metrics")


@asynccontextmanager
async def running_daemon(database_url: str, latency_ms: float = 5.0) -> AsyncIterator[Daemon]:
    settings = load_settings(None, ENVIRONMENT | {"DATABASE_URL": database_url})
    async with trio.open_nursery() as nursery:
        stack: Stack = await nursery.start(
            partial(
                serve_with_simulator,
                settings,
                database_url,
                host="127.0.0.1",
                port=0,
                latency_ms=latency_ms,
                mps=0,  # the accounts' own budget (1,000/s) is the only limit
            )
        )
        try:
            yield Daemon(stack)
        finally:
            nursery.cancel_scope.cancel()


async def test_watch_follows_a_campaign_to_its_final_metrics(database_url: str) -> None:
    with trio.fail_after(90):
        async with running_daemon(database_url) as daemon:
            account_id = await daemon.make_account()
            await daemon.make_contacts(300)
            campaign_id = await daemon.make_campaign(account_id, "Watched", 6000)

            env = dict(os.environ, COLUMNS="120")
            process = await trio.lowlevel.open_process(
                [str(CAMPAIGN_ENGINE), "watch", campaign_id, "--url", daemon.url,
                 "--token", daemon.token],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )  # fmt: skip
            assert process.stdout is not None
            output = bytearray()

            async def collect() -> None:
                assert process.stdout is not None
                while chunk := await process.stdout.receive_some(65536):
                    output.extend(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                # The watcher is subscribed once its socket is counted; only then start, so
                # the run is followed over the stream rather than read once at the end.
                while True:
                    if await daemon.socket_clients() >= 1:
                        break
                    await trio.sleep(0.05)
                await daemon.call("POST", f"/api/v1/campaigns/{campaign_id}/start")
                assert await process.wait() == 0, output.decode()

            text = output.decode()
            assert "Watched: completed" in text, text
            for expected in ("recipients", "300", "sent", "delivered", "delivery rate", "100.00%"):
                assert expected in text, text


async def test_watch_exit_codes_without_token_and_for_unknown_campaign(
    database_url: str,
) -> None:
    with trio.fail_after(60):
        async with running_daemon(database_url) as daemon:
            env = {k: v for k, v in os.environ.items() if k != "CAMPAIGN_ENGINE_TOKEN"}
            missing = "00000000-0000-0000-0000-000000000000"
            no_token = await trio.run_process(
                [str(CAMPAIGN_ENGINE), "watch", missing, "--url", daemon.url],
                capture_stdout=True, capture_stderr=True, check=False, env=env,
            )  # fmt: skip
            assert no_token.returncode == 2
            assert b"token is required" in no_token.stderr
            unknown = await trio.run_process(
                [str(CAMPAIGN_ENGINE), "watch", missing, "--url", daemon.url,
                 "--token", daemon.token],
                capture_stdout=True, capture_stderr=True, check=False, env=env,
            )  # fmt: skip
            assert unknown.returncode == 2
            assert b"404" in unknown.stderr and b"Campaign not found" in unknown.stderr
