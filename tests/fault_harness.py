"""The processes a fault test breaks: the simulator and the real daemon (`python -m
engine.cli ...`), each its own program, on a fresh database, talking over loopback.

The daemon is another process: a test learns what it did only by asking (its HTTP
API, the simulator's record of accepted requests), so waiting here means asking
again shortly, always under a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import trio
import trio_asyncio

from api.auth import issue_token
from engine.transport.http1 import HTTPConnection, HTTPError, Origin
from tests.conftest import ADMIN_DSN, REDIS_URL, dsn_for

JWT_SECRET = uuid.uuid4().hex + uuid.uuid4().hex
APP_SECRET = uuid.uuid4().hex
USER = "fault-tester"
PG_VERSION = (
    next(iter(sorted(os.listdir("/etc/postgresql"))), "")
    if os.path.isdir("/etc/postgresql")
    else ""
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def admin(query: str, *args: Any) -> Any:
    """One statement on a new admin connection (it survives server restarts)."""
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(ADMIN_DSN, timeout=5)
    try:
        return await trio_asyncio.aio_as_trio(conn.fetchval)(query, *args)
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """An empty database (the daemon migrates it); dropped on exit."""
    name = f"ce_fault_{uuid.uuid4().hex[:10]}"
    await admin(f"CREATE DATABASE {name}")
    try:
        yield dsn_for(name)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Reply(msgspec.Struct, frozen=True):
    status: int
    body: Any


async def request(
    port: int, method: str, path: str, json: Any = None, *, wait: float = 10.0
) -> Reply:
    """One HTTP request on its own connection; HTTPError when nothing answered."""
    head = [
        (b"connection", b"close"),
        (b"authorization", f"Bearer {issue_token(JWT_SECRET, USER, 3600)}".encode()),
    ]
    body = b""
    if json is not None:
        body = msgspec.json.encode(json)
        head.append((b"content-type", b"application/json"))
    connection = HTTPConnection(
        Origin("http", "127.0.0.1", port), connect_timeout=wait, read_timeout=wait
    )
    try:
        response = await connection.request(method, path, head, body)
    finally:
        await connection.aclose()
    return Reply(response.status, msgspec.json.decode(response.body) if response.body else None)


async def eventually(check: Callable[[], Any], *, within: float, every: float = 0.2) -> Any:
    """Ask `check()` (sync or async) until it returns something truthy."""
    with trio.fail_after(within):
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return result
            await trio.sleep(every)


class Program:
    """A child process, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: trio.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = await trio.lowlevel.open_process(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, sessions and sockets dropped by the kernel."""
        assert self.process is not None
        self.process.kill()

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, grace: float = 20.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGINT)
        with trio.move_on_after(grace):
            await self.process.wait()
            return
        self.process.kill()
        await self.process.wait()

    def tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class Simulator(Program):
    def __init__(self, log_dir: Path, daemon_port: int, *extra: str) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "engine.cli", "simulator", "--port", str(self.port),
                "--mps", "0", "--latency-ms", "20", "--seed", "7",
                "--webhook-url", f"http://127.0.0.1:{daemon_port}/webhooks/whatsapp",
                "--app-secret", APP_SECRET, *extra]  # fmt: skip
        super().__init__("simulator", argv, dict(os.environ), log_dir)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v21.0"

    async def start_ready(self) -> None:
        await self.start()
        await eventually(self._answers, within=20)

    async def _answers(self) -> bool:
        try:
            return (await request(self.port, "GET", "/simulator/stats")).status == 200
        except HTTPError:
            return False

    async def accepted_counts(self, phone_number_id: str) -> dict[str, int]:
        """Every `to` the simulator accepted for this number, with how many times."""
        reply = await request(self.port, "GET", "/simulator/accepted?counts=all&last=0")
        counts: dict[str, int] = reply.body["counts"].get(phone_number_id, {})
        return counts


class Daemon(Program):
    """`campaign-engine serve` on a fixed port (so a restart keeps the webhook URL)."""

    def __init__(
        self,
        name: str,
        log_dir: Path,
        dsn: str,
        *,
        port: int | None = None,
        redis: bool = False,
        simulator_api_url: str = "",
        **settings: str,
    ) -> None:
        self.port = port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_ENGINE_")}
        env |= {
            "DATABASE_URL": dsn,
            "REDIS_URL": REDIS_URL if redis else "",
            "ENGINE_JWT_SECRET": JWT_SECRET,
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_API_URL": simulator_api_url,
            "CAMPAIGN_ENGINE_LOGGING_LEVEL": "INFO",
            "CAMPAIGN_ENGINE_SERVER_SHUTDOWN_GRACE_SECONDS": "2",
        }
        env |= {f"CAMPAIGN_ENGINE_{k.upper()}": v for k, v in settings.items()}
        argv = [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1",
                "--port", str(self.port)]  # fmt: skip
        super().__init__(name, argv, env, log_dir)

    async def start_ready(self) -> None:
        await self.start()
        await eventually(self._healthy, within=30)

    async def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")
        try:
            return (await request(self.port, "GET", "/healthz", wait=2)).status == 200
        except HTTPError:
            return False

    async def api(self, method: str, path: str, json: Any = None) -> Reply:
        """A request to the API; asked again while the daemon says its database is
        briefly unavailable (503), as a client should."""
        for _ in range(50):
            reply = await request(self.port, method, f"/api/v1{path}", json)
            if reply.status != 503:
                return reply
            await trio.sleep(0.2)
        return reply


class HealthWatch:
    """Asks each daemon's `/healthz` every 0.2 s and keeps what it heard."""

    def __init__(self, daemons: list[Daemon]) -> None:
        self.daemons = daemons
        self.statuses: dict[str, list[int]] = {d.name: [] for d in daemons}
        self.unanswered: dict[str, list[str]] = {d.name: [] for d in daemons}
        self.paused: set[str] = set()  # daemons the test killed on purpose

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            for daemon in self.daemons:
                nursery.start_soon(self._watch, daemon)

    async def _watch(self, daemon: Daemon) -> None:
        while True:
            if daemon.name not in self.paused:
                try:
                    reply = await request(daemon.port, "GET", "/healthz", wait=5)
                    self.statuses[daemon.name].append(reply.status)
                except HTTPError as error:
                    if daemon.name not in self.paused:
                        self.unanswered[daemon.name].append(str(error))
            await trio.sleep(0.2)


async def set_up_campaigns(
    daemon: Daemon,
    *,
    recipients: int,
    phone_number_id: str,
    campaigns: int = 1,
    rate_per_minute: int = 3_000,
    messages_per_second: int = 80,
) -> list[str]:
    """An account, `recipients` contacts split evenly between `campaigns` campaigns
    (by tag, so no number is in two), all sending now; their ids."""
    account = await daemon.api(
        "POST",
        "/accounts",
        {"name": "Faults", "phoneNumberId": phone_number_id, "accessToken": "token",
         "messagesPerSecond": messages_per_second},
    )  # fmt: skip
    assert account.status == 201, account.body
    # None ends in 0000: the simulator fails those numbers (131026) on purpose.
    contacts = [
        {"phone": f"+1555{i:07d}", "firstName": f"F{i}", "tags": [f"group-{i % campaigns}"]}
        for i in range(1, recipients + 1)
    ]
    added = await daemon.api("POST", "/contacts", {"contacts": contacts})
    assert added.status == 200, added.body
    ids = []
    for group in range(campaigns):
        created = await daemon.api(
            "POST",
            "/campaigns",
            {"accountId": account.body["data"]["id"], "name": f"Faults {group}",
             "messageType": "text", "messageContent": "Hi {{firstName}}",
             "audienceType": "tags", "audienceConfig": {"tags": [f"group-{group}"]},
             "scheduleType": "now",
             "throttleConfig": {"messagesPerMinute": rate_per_minute, "batchSize": 50}},
        )  # fmt: skip
        assert created.status == 201, created.body
        ids.append(str(created.body["data"]["id"]))
    return ids


async def campaign(daemon: Daemon, campaign_id: str) -> dict[str, Any]:
    reply = await daemon.api("GET", f"/campaigns/{campaign_id}")
    assert reply.status == 200, reply.body
    data: dict[str, Any] = reply.body["data"]
    return data


async def recipients(daemon: Daemon, campaign_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = ""
    while True:
        reply = await daemon.api("GET", f"/campaigns/{campaign_id}/recipients?limit=500{cursor}")
        assert reply.status == 200, reply.body
        rows += reply.body["data"]
        next_cursor = reply.body["pagination"]["next_cursor"]
        if not next_cursor:
            return rows
        cursor = f"&cursor={next_cursor}"


async def completed(daemon: Daemon, campaign_id: str, *, within: float) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        try:
            shown = await campaign(daemon, campaign_id)
        except (HTTPError, AssertionError):
            return None
        return shown if shown["status"] in ("completed", "failed", "cancelled") else None

    try:
        finished: dict[str, Any] = await eventually(done, within=within, every=0.3)
    except trio.TooSlowError:
        raise AssertionError(f"campaign not finished within {within} s:\n{daemon.tail()}") from None
    return finished


def normalized(phone: str) -> str:
    return phone.lstrip("+")
