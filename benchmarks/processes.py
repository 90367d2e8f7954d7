"""The processes under test: the simulator and the daemon, each a separate program, and the
fresh database the daemon runs on. Everything listens on 127.0.0.1; everything started here
is stopped here."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil

CAMPAIGN_ENGINE = str(Path(sys.executable).parent / "campaign-engine")
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def database_dsns(server_url: str, name: str) -> tuple[str, str]:
    """(admin DSN, DSN of database `name`) on the server of `server_url`. A URL without a
    database connects to `postgres` for administration."""
    parts = urlsplit(server_url)
    admin_db = parts.path.strip("/") or "postgres"
    admin = urlunsplit(parts._replace(path="/" + admin_db))
    return admin, urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database; dropped on exit."""
    name = f"ce_bench_{uuid.uuid4().hex[:10]}"
    admin, dsn = database_dsns(server_url, name)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@dataclass
class Process:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    samples: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        return float(psutil.Process(self.pid).memory_info().rss) / 2**20

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)


_started = itertools.count(1)


async def _start(name: str, argv: list[str], env: Mapping[str, str]) -> Process:
    # One file per process started: scenarios after the first start their own daemon.
    log_path = LOG_DIR / f"campaign-engine-bench-{name}-{os.getpid()}-{next(_started)}.log"
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=dict(env)
    )
    log.close()
    return Process(name, process, log_path)


async def _stop(process: Process, grace: float = 20.0) -> None:
    if process.process.returncode is not None:
        return
    process.process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.process.wait(), grace)
    except TimeoutError:
        process.process.kill()
        await process.process.wait()


async def _wait_ready(http: aiohttp.ClientSession, url: str, process: Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.process.returncode is not None:
            tail = process.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{process.name} exited ({process.process.returncode}):\n{tail}")
        try:
            async with http.get(url) as response:
                if response.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.name}: {url} did not answer within 60 s")


@dataclass(frozen=True)
class SimulatorSpec:
    """One simulator process: `webhooks` posts signed statuses to the daemon, one status per
    request unless `webhook_batch` > 1."""

    latency_ms: float
    webhooks: bool = False
    webhook_batch: int = 1
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Simulator:
    process: Process
    url: str  # http://127.0.0.1:P

    @property
    def api_url(self) -> str:
        """What accounts use as their apiUrl."""
        return f"{self.url}/v21.0"


@dataclass(frozen=True)
class Stack:
    simulators: dict[str, Simulator]  # the first is the default one
    daemon: Process
    daemon_url: str
    jwt_secret: str
    webhook_url: str  # where the simulators post
    webhook_door: str  # "listener" (the daemon's own webhook port) or "api"
    database: str  # the scratch database's name
    dsn: str  # and how to reach it

    @property
    def simulator(self) -> Simulator:
        return next(iter(self.simulators.values()))

    @property
    def simulator_url(self) -> str:
        return self.simulator.url

    @property
    def api_url(self) -> str:
        return self.simulator.api_url


def _local_api_urls_allowed() -> dict[str, str]:
    """The daemon refuses an account `apiUrl` outside `whatsapp.allowed_api_urls` (when it
    has that setting): allow the simulators on 127.0.0.1."""
    from engine.settings import WhatsAppSettings

    if "allowed_api_urls" not in WhatsAppSettings.__struct_fields__:
        return {}
    return {"CAMPAIGN_ENGINE_WHATSAPP_ALLOWED_API_URLS": "http://127.0.0.1:"}


def dedicated_webhook_listener() -> bool:
    """Whether this daemon has a webhook listener of its own (`webhooks.listen_port`)."""
    from engine.settings import WebhookSettings

    return "listen_port" in WebhookSettings.__struct_fields__


@asynccontextmanager
async def running_stack(
    dsn: str,
    *,
    concurrency: int,
    http: aiohttp.ClientSession,
    simulators: Mapping[str, SimulatorSpec],
    daemon_env: Mapping[str, str] | None = None,
    webhook_door: str = "listener",
) -> AsyncIterator[Stack]:
    """The simulators (no throttling; those with webhooks post them, signed, to the daemon)
    and the daemon. `webhook_door`: "listener" posts to the daemon's dedicated webhook
    listener when it has one, "api" to `POST /webhooks/whatsapp` on the API port."""
    jwt_secret = uuid.uuid4().hex + uuid.uuid4().hex
    app_secret = uuid.uuid4().hex
    daemon_port = free_port()
    daemon_url = f"http://127.0.0.1:{daemon_port}"
    env_extra: dict[str, str] = _local_api_urls_allowed()
    webhook_url = f"{daemon_url}/webhooks/whatsapp"
    door = "api"
    if webhook_door == "listener" and dedicated_webhook_listener():
        door = "listener"
        listener_port = free_port()
        env_extra["CAMPAIGN_ENGINE_WEBHOOKS_LISTEN_PORT"] = str(listener_port)
        webhook_url = f"http://127.0.0.1:{listener_port}/webhooks/whatsapp"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_ENGINE_")}
    started: dict[str, Simulator] = {}
    daemon: Process | None = None
    try:
        for name, spec in simulators.items():
            port = free_port()
            argv = [CAMPAIGN_ENGINE, "simulator", "--host", "127.0.0.1", "--port", str(port),
                    "--latency-ms", str(spec.latency_ms), "--mps", "0",
                    *spec.extra_args]  # fmt: skip
            if spec.webhooks:
                argv += ["--webhook-url", webhook_url, "--app-secret", app_secret,
                         "--webhook-batch", str(spec.webhook_batch)]  # fmt: skip
            process = await _start(f"simulator-{name}", argv, base_env)
            started[name] = Simulator(process, f"http://127.0.0.1:{port}")
            await _wait_ready(http, f"{started[name].url}/simulator/stats", process)
        daemon = await _start(
            "daemon",
            [CAMPAIGN_ENGINE, "serve", "--host", "127.0.0.1", "--port", str(daemon_port)],
            base_env
            | {
                "DATABASE_URL": dsn,
                "REDIS_URL": "",
                "ENGINE_JWT_SECRET": jwt_secret,
                "WHATSAPP_APP_SECRET": app_secret,
                "CAMPAIGN_ENGINE_SENDER_CONCURRENCY": str(concurrency),
                "CAMPAIGN_ENGINE_LOGGING_LEVEL": "WARNING",
            }
            | env_extra
            | dict(daemon_env or {}),
        )
        await _wait_ready(http, f"{daemon_url}/healthz", daemon)
        database = urlsplit(dsn).path.strip("/")
        yield Stack(started, daemon, daemon_url, jwt_secret, webhook_url, door, database, dsn)
    finally:
        if daemon is not None:
            await _stop(daemon)
        for simulator in started.values():
            await _stop(simulator.process)


class PostgresCpu:
    """CPU seconds the PostgreSQL server processes on this machine spent between `start()`
    and `seconds()`: all of them, or those serving `database` (a backend's process title
    names its database). Counted per process, so one that ended meanwhile only loses its
    share (never makes the figure negative)."""

    def __init__(self, database: str | None = None) -> None:
        self.database = database
        self._before: dict[int, float] = {}

    def _now(self) -> dict[int, float]:
        found: dict[int, float] = {}
        for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            info = process.info
            if info["name"] not in ("postgres", "postmaster") or not info["cpu_times"]:
                continue
            title = " ".join(info["cmdline"] or ())
            if self.database is not None and f" {self.database} " not in title:
                continue
            found[process.pid] = info["cpu_times"].user + info["cpu_times"].system
        return found

    def start(self) -> None:
        self._before = self._now()

    def seconds(self) -> float:
        return sum(cpu - self._before.get(pid, 0.0) for pid, cpu in self._now().items())


async def sample_rss(process: Process, interval: float = 0.2) -> None:
    """Append the RSS (MB) every `interval` s to `process.samples`, until cancelled."""
    while True:
        try:
            process.samples.append(process.rss_mb())
        except psutil.Error:
            return
        await asyncio.sleep(interval)
