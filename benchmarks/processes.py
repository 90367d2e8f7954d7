"""The processes under test: the simulator and the daemon, each a separate program, and the
fresh database the daemon runs on. Everything listens on 127.0.0.1; everything started here
is stopped here."""

from __future__ import annotations

import asyncio
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


async def _start(name: str, argv: list[str], env: Mapping[str, str]) -> Process:
    log_path = LOG_DIR / f"campaign-engine-bench-{name}-{os.getpid()}.log"
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
class Stack:
    simulator: Process
    simulator_url: str  # http://127.0.0.1:P
    daemon: Process
    daemon_url: str
    jwt_secret: str

    @property
    def api_url(self) -> str:
        """What accounts use as their apiUrl."""
        return f"{self.simulator_url}/v21.0"


@asynccontextmanager
async def running_stack(
    dsn: str, *, latency_ms: float, concurrency: int, http: aiohttp.ClientSession
) -> AsyncIterator[Stack]:
    """The simulator (no throttling, webhooks signed to the daemon) and the daemon."""
    jwt_secret = uuid.uuid4().hex + uuid.uuid4().hex
    app_secret = uuid.uuid4().hex
    daemon_port, simulator_port = free_port(), free_port()
    daemon_url = f"http://127.0.0.1:{daemon_port}"
    simulator_url = f"http://127.0.0.1:{simulator_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_ENGINE_")}
    simulator = await _start(
        "simulator",
        [CAMPAIGN_ENGINE, "simulator", "--host", "127.0.0.1", "--port", str(simulator_port),
         "--latency-ms", str(latency_ms), "--mps", "0",
         "--webhook-url", f"{daemon_url}/webhooks/whatsapp", "--app-secret", app_secret],
        base_env,
    )  # fmt: skip
    daemon: Process | None = None
    try:
        await _wait_ready(http, f"{simulator_url}/simulator/stats", simulator)
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
            },
        )
        await _wait_ready(http, f"{daemon_url}/healthz", daemon)
        yield Stack(simulator, simulator_url, daemon, daemon_url, jwt_secret)
    finally:
        if daemon is not None:
            await _stop(daemon)
        await _stop(simulator)


async def sample_rss(process: Process, interval: float = 0.2) -> None:
    """Append the RSS (MB) every `interval` s to `process.samples`, until cancelled."""
    while True:
        try:
            process.samples.append(process.rss_mb())
        except psutil.Error:
            return
        await asyncio.sleep(interval)
