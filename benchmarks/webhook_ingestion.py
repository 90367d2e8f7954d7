"""Webhook ingestion: signed one-status requests per second into one daemon, and the
daemon's CPU per request, through each door (docs/webhooks.md).

    python -m benchmarks.webhook_ingestion [--requests N] [--api-requests N]
        [--connections 32] [--database-url URL] [--profile-listener FILE.svg]

What runs, each in its own process: the daemon (`campaign-engine serve`, with
`webhooks.listen_port` set, on a scratch database created for the run and dropped
after it) and a load generator (raw sockets, `--connections` keep-alive connections,
one request in flight on each). Every request is a signed notification of ~600
bytes carrying one `delivered` status, shaped as Meta sends them (pricing,
conversation, our `biz_opaque_callback_data` reference), each for a different
recipient, so every fact changes a row. A 503 (backlog full) is sent again later,
as WhatsApp would.

Per door: `requests_per_second` (answered 200, first request to last answer),
`daemon_cpu_ms_per_request` (user + system CPU of the daemon process, psutil, from
the first request until every fact is stored, so the batched UPDATEs count too),
and `lost` (facts not found applied in the database afterwards: must be 0).
`run(...) -> dict` is the entry point for the bundled benchmark (benchmarks/run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from benchmarks.processes import database_dsns, free_port
from engine.core.callback_reference import CallbackReferences

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/"
CAMPAIGN_ENGINE = str(Path(sys.executable).parent / "campaign-engine")
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
PHONE_NUMBER_ID = "106540352242922"
T0 = 1_750_263_773


# --- the load generator (its own process) ----------------------------------------------------


def _notification(wamid: str, reference: str, to: str) -> bytes:
    """One status as Meta posts it: ~600 bytes."""
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": PHONE_NUMBER_ID,
                                },
                                "statuses": [
                                    {
                                        "id": wamid,
                                        "status": "delivered",
                                        "timestamp": str(T0),
                                        "recipient_id": to,
                                        "biz_opaque_callback_data": reference,
                                        "conversation": {
                                            "id": "b7e0a1f5c3d94c6e8f2a9b1c0d3e4f5a",
                                            "expiration_timestamp": str(T0 + 86_400),
                                            "origin": {"type": "marketing"},
                                        },
                                        "pricing": {
                                            "billable": True,
                                            "pricing_model": "PMP",
                                            "category": "marketing",
                                            "type": "regular",
                                        },
                                    }
                                ],
                            },
                            "field": "messages",
                        }
                    ],
                }
            ],
        },
        separators=(",", ":"),
    ).encode()


def _request(port: int, secret: bytes, body: bytes) -> bytes:
    signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
    head = (
        f"POST /webhooks/whatsapp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        "content-type: application/json\r\nuser-agent: facebookexternalua\r\n"
        f"x-hub-signature-256: sha256={signature}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _status_of(response: bytes) -> int:
    return int(response[9:12])


def _complete(buffer: bytes) -> int:
    """The length of the first complete response in `buffer`, or 0."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return 0
    length = 0
    for line in buffer[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    total = end + 4 + length
    return total if len(buffer) >= total else 0


def load(
    port: int, requests: list[bytes], connections: int, results: multiprocessing.Queue[Any]
) -> None:
    """Send every request once it gets a 200 (503s go to the back of the line)."""
    waiting = list(reversed(requests))
    selector = selectors.DefaultSelector()
    answers: dict[int, int] = {}
    in_flight: dict[socket.socket, tuple[bytes, bytearray]] = {}

    def send_next(sock: socket.socket) -> None:
        request = waiting.pop()
        in_flight[sock] = (request, bytearray())
        sock.sendall(request)

    started = time.perf_counter()
    for _ in range(min(connections, len(waiting))):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(sock, selectors.EVENT_READ)
        send_next(sock)
    while in_flight:
        for key, _events in selector.select():
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            sock = ready
            request, buffer = in_flight[sock]
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the daemon closed a keep-alive connection")
            buffer += chunk
            size = _complete(bytes(buffer))
            if not size:
                continue
            status = _status_of(bytes(buffer[:size]))
            answers[status] = answers.get(status, 0) + 1
            if status != 200:
                waiting.insert(0, request)  # again later, as WhatsApp retries
            del in_flight[sock]
            if waiting:
                send_next(sock)
            else:
                selector.unregister(sock)
                sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put(
        {
            "seconds": time.perf_counter() - started,
            "answers": answers,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        }
    )


# --- the daemon and its database -----------------------------------------------------------


async def _seed(dsn: str, count: int) -> tuple[list[tuple[int, str, str]], bytes]:
    """A completed campaign of `count` sent recipients on one account; (id, wamid, phone)
    of each, and the database's callback reference key."""
    conn = await asyncpg.connect(dsn)
    try:
        account = await conn.fetchval(
            """INSERT INTO accounts (owner_id, name, phone_number_id, access_token)
               VALUES ('bench', 'bench', $1, 't') RETURNING id""",
            PHONE_NUMBER_ID,
        )
        campaign = await conn.fetchval(
            """INSERT INTO campaigns (owner_id, account_id, name, status, message_type,
                   message_content, audience_type, schedule_type, throttle_config,
                   total_recipients, recipients_frozen)
               VALUES ('bench', $1, 'bench', 'completed', 'text', '"hi"', 'all', 'manual',
                       '{}', $2, true) RETURNING id""",
            account,
            count,
        )
        await conn.execute("INSERT INTO campaign_counters (campaign_id) VALUES ($1)", campaign)
        await conn.execute(
            """INSERT INTO campaign_recipients
                   (campaign_id, phone, variables, status, attempts, provider_message_id, sent_at)
               SELECT $1, '+1555' || lpad(i::text, 7, '0'), '{}', 'sent', 1,
                      'wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA' || i, now()
               FROM generate_series(1, $2) AS i""",
            campaign,
            count,
        )
        rows = await conn.fetch(
            "SELECT id, provider_message_id, phone FROM campaign_recipients ORDER BY id"
        )
        key = await conn.fetchval("SELECT key FROM callback_reference_key")
    finally:
        await conn.close()
    return [(r["id"], r["provider_message_id"], r["phone"]) for r in rows], bytes.fromhex(key)


async def _delivered(dsn: str, ids: list[int]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            """SELECT count(*) FROM campaign_recipients
               WHERE id = ANY($1::bigint[]) AND delivered_at IS NOT NULL""",
            ids,
        )
        return count
    finally:
        await conn.close()


async def _admin(admin_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _wait_ready(url: str, daemon: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited:\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 60 s")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user), float(times.system)


def _measure_door(
    name: str,
    port: int,
    daemon: subprocess.Popen[bytes],
    dsn: str,
    recipients: list[tuple[int, str, str]],
    references: CallbackReferences,
    secret: bytes,
    connections: int,
    profile: str | None,
) -> dict[str, Any]:
    requests = [
        _request(port, secret, _notification(wamid, references.issue(rid), phone.lstrip("+")))
        for rid, wamid, phone in recipients
    ]
    ids = [rid for rid, _, _ in recipients]
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    spy: subprocess.Popen[bytes] | None = None
    if profile:
        formats = {".json": "speedscope", ".svg": "flamegraph"}
        spy = subprocess.Popen(
            [PY_SPY, "record", "-p", str(daemon.pid), "-r", "200", "-o", profile,
             "-f", formats.get(Path(profile).suffix, "raw")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # attached
    generator = context.Process(target=load, args=(port, requests, connections, results))
    cpu_before = _cpu_seconds(daemon.pid)
    generator.start()
    outcome = results.get()
    generator.join()
    answered = time.perf_counter()
    # Until every fact is stored (the applier flushes every 100 ms).
    applied = 0
    deadline = answered + 60
    while time.perf_counter() < deadline:
        applied = asyncio.run(_delivered(dsn, ids))
        if applied == len(ids):
            break
        time.sleep(0.05)
    stored = time.perf_counter()
    user, system = (
        after - before for after, before in zip(_cpu_seconds(daemon.pid), cpu_before, strict=True)
    )
    cpu = user + system
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    return {
        "door": name,
        "requests": len(requests),
        "answers": {str(k): v for k, v in sorted(outcome["answers"].items())},
        "seconds": round(outcome["seconds"], 3),
        "requests_per_second": round(len(requests) / outcome["seconds"]),
        "daemon_cpu_seconds": round(cpu, 3),
        "daemon_cpu_ms_per_request": round(cpu * 1000 / len(requests), 4),
        "of_which_system_ms": round(system * 1000 / len(requests), 4),
        "stored_after_last_answer_seconds": round(stored - answered, 3),
        "lost": len(ids) - applied,
    }


def run(
    *,
    database_url: str = DEFAULT_SERVER,
    requests: int = 30_000,
    api_requests: int = 10_000,
    connections: int = 32,
    profile_listener: str | None = None,
) -> dict[str, Any]:
    """Measure both doors of one daemon; returns the figures as a dict."""
    name = f"ce_bench_hooks_{uuid.uuid4().hex[:10]}"
    admin, dsn = database_dsns(database_url, name)
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    api_port, listener_port = free_port(), free_port()
    secret = uuid.uuid4().hex
    log_path = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"webhook-bench-{os.getpid()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_ENGINE_")} | {
        "DATABASE_URL": dsn,
        "REDIS_URL": "",
        "ENGINE_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "WHATSAPP_APP_SECRET": secret,
        "CAMPAIGN_ENGINE_WEBHOOKS_LISTEN_PORT": str(listener_port),
        "CAMPAIGN_ENGINE_LOGGING_LEVEL": "WARNING",
    }
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [CAMPAIGN_ENGINE, "serve", "--host", "127.0.0.1", "--port", str(api_port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )  # fmt: skip
    try:
        _wait_ready(f"http://127.0.0.1:{listener_port}/healthz", daemon, log_path)
        _wait_ready(f"http://127.0.0.1:{api_port}/healthz", daemon, log_path)
        recipients, key = asyncio.run(_seed(dsn, requests + api_requests))
        references = CallbackReferences(key)
        common = (daemon, dsn)
        listener = _measure_door(
            "listener", listener_port, *common, recipients[:requests], references,
            secret.encode(), connections, profile_listener,
        )  # fmt: skip
        api = _measure_door(
            "api", api_port, *common, recipients[requests:], references,
            secret.encode(), connections, None,
        )  # fmt: skip
    finally:
        daemon.send_signal(signal.SIGINT)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    body_bytes = len(_notification(recipients[0][1], references.issue(1), "15551234567"))
    return {
        "connections": connections,
        "body_bytes": body_bytes,
        "listener": listener,
        "api": api,
        "listener_vs_api_cpu": round(
            api["daemon_cpu_ms_per_request"] / listener["daemon_cpu_ms_per_request"], 2
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.webhook_ingestion", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--requests", type=int, default=30_000, help="listener (default 30000)")
    parser.add_argument("--api-requests", type=int, default=10_000, help="API port (default 10000)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER),
        help="the PostgreSQL server the scratch database is created on",
    )
    parser.add_argument(
        "--profile-listener",
        metavar="FILE",
        help="py-spy record the daemon meanwhile (.svg, .json: speedscope, else collapsed)",
    )
    args = parser.parse_args(argv)
    result = run(
        database_url=args.database_url,
        requests=args.requests,
        api_requests=args.api_requests,
        connections=args.connections,
        profile_listener=args.profile_listener,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
