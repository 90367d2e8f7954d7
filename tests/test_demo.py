"""`campaign-engine demo` as a user runs it: a subprocess on a fresh database, its printed
dashboard URL and token, the API listing both sample campaigns, one of them progressing,
and Ctrl-C ending it with status 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import trio

from engine.transport.http1 import HTTPConnection, split_url

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN_ENGINE = Path(sys.executable).parent / "campaign-engine"


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, seen: bytearray) -> str:
    while marker not in seen:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise AssertionError(f"demo exited before printing {marker!r}:\n{seen.decode()}")
        seen += chunk
    return seen.decode()


async def get_json(base_url: str, path: str, token: str) -> Any:
    origin, _ = split_url(base_url + "/")
    connection = HTTPConnection(origin, read_timeout=10)
    try:
        response = await connection.request(
            "GET", path, [(b"authorization", f"Bearer {token}".encode())]
        )
    finally:
        await connection.aclose()
    assert response.status == 200, response.body
    return msgspec.json.decode(response.body)


async def test_demo_runs_two_campaigns_and_stops_on_ctrl_c(database_url: str) -> None:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        ENGINE_JWT_SECRET="",
        WHATSAPP_APP_SECRET="",
        CAMPAIGN_ENGINE_LOGGING_LEVEL="WARNING",
    )
    process = await trio.lowlevel.open_process(
        [str(CAMPAIGN_ENGINE), "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(60):
            output = await read_until(process.stdout, b"Press Ctrl-C", bytearray())
        dashboard = re.search(r"Dashboard:\s+(http://127\.0\.0\.1:\d+)/", output)
        token = re.search(r"Token:\s+(\S+)", output)
        assert dashboard and token, output
        base_url = dashboard.group(1)

        with trio.fail_after(60):
            page = await get_json(base_url, "/api/v1/campaigns", token.group(1))
            campaigns = {c["name"].split(" (")[0]: c for c in page["data"]}
            assert set(campaigns) == {"Spring sale", "Newsletter"}
            assert campaigns["Newsletter"]["status"] == "scheduled"
            running_id = campaigns["Spring sale"]["id"]
            # Polling the API, bounded by fail_after: the subprocess has no other signal.
            while True:
                reply = await get_json(base_url, f"/api/v1/campaigns/{running_id}", token.group(1))
                if reply["data"]["stats"]["sent"] > 0 and reply["data"]["progress"] > 0:
                    break
                await trio.sleep(0.2)
            assert reply["data"]["status"] == "running"
            assert reply["data"]["total_recipients"] > 1_900  # 2,000 contacts minus opted out

        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
