"""`campaign-engine demo` as a user runs it: a subprocess on a fresh database, its printed
dashboard URL and token, the API listing its sample campaigns, one of them progressing and
the A/B test's tracked link counting a click, and Ctrl-C ending it with status 0. Its
console shows the banner and warnings, not pages of INFO lines: not the embedded
PostgreSQL's (pgserver's), not hypercorn's."""

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

from engine.settings import load_settings
from engine.tools.demo import demo_environment
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


async def assert_redirects(base_url: str, path: str, prefix: str) -> None:
    origin, _ = split_url(base_url + "/")
    connection = HTTPConnection(origin, read_timeout=10)
    try:
        response = await connection.request("GET", path, [])
    finally:
        await connection.aclose()
    assert response.status == 302, response
    location = dict(response.headers)[b"location"].decode()
    assert location.startswith(prefix), location


def demo_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_ENGINE_")}
    env.update(ENGINE_JWT_SECRET="", WHATSAPP_APP_SECRET="", **overrides)
    return env


def log_lines(output: str) -> list[str]:
    """The log records in the demo's console (stderr and stdout together, in order)."""
    return [line for line in output.splitlines() if re.match(r"\d{4}-\d\d-\d\dT", line)]


async def test_demo_runs_its_campaigns_and_stops_on_ctrl_c(database_url: str) -> None:
    # The default console level: only warnings and errors next to the banner.
    process = await trio.lowlevel.open_process(
        [str(CAMPAIGN_ENGINE), "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=demo_env(DATABASE_URL=database_url),
        cwd=ROOT,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(60):
            output = await read_until(process.stdout, b"Press Ctrl-C", bytearray())
        # Warnings would show; there are none on a fresh database, and nothing below them.
        assert log_lines(output) == [], output
        dashboard = re.search(r"Dashboard:\s+(http://127\.0\.0\.1:\d+)/", output)
        token = re.search(r"Token:\s+(\S+)", output)
        assert dashboard and token, output
        base_url = dashboard.group(1)
        assert f"API docs:   {base_url}/docs" in output

        with trio.fail_after(60):
            page = await get_json(base_url, "/api/v1/campaigns", token.group(1))
            campaigns = {c["name"].split(" (")[0]: c for c in page["data"]}
            assert set(campaigns) == {"Spring sale", "Newsletter", "Spring offer A/B"}
            assert campaigns["Newsletter"]["status"] == "scheduled"
            ab_test = campaigns["Spring offer A/B"]
            assert [v["name"] for v in ab_test["variants"]] == ["Short", "Personal"]
            assert ab_test["track_links"] is True
            # The banner's link is one a recipient was sent: following it counts a click.
            # (Its port is the --port given, 0 here: the daemon's is in the dashboard URL.)
            link = re.search(r"Click:\s+http://127\.0\.0\.1:\d+(/l/\S+)", output)
            assert link, output
            await assert_redirects(base_url, link.group(1), "https://example.com/spring?v=")
            reply = await get_json(base_url, f"/api/v1/campaigns/{ab_test['id']}", token.group(1))
            assert reply["data"]["stats"]["clicked"] == 1
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


async def test_demo_on_the_embedded_database_logs_no_pgserver_or_hypercorn_info(
    tmp_path: Path,
) -> None:
    # At INFO the engine's own lines show; the embedded PostgreSQL's command lines and initdb
    # output, and hypercorn's start-up line, do not.
    env = demo_env(
        CAMPAIGN_ENGINE_LOGGING_LEVEL="INFO",
        CAMPAIGN_ENGINE_DATABASE_DATA_DIR=str(tmp_path / "data"),
    )
    env.pop("DATABASE_URL", None)
    process = await trio.lowlevel.open_process(
        [str(CAMPAIGN_ENGINE), "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    assert process.stdout is not None
    seen = bytearray()
    try:
        with trio.fail_after(90):
            output = await read_until(process.stdout, b"Press Ctrl-C", seen)
        lines = log_lines(output)
        assert any("WARNING engine.tools.embedded_db: DATABASE_URL is not set" in line
                   for line in lines), output  # fmt: skip
        assert any("INFO engine.daemon: listening on http://127.0.0.1:" in line for line in lines)
        assert "initdb" not in output and "pg_ctl" not in output, output
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
            while chunk := await process.stdout.receive_some(65536):
                seen += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    noisy = [
        line for line in log_lines(seen.decode()) if " pgserver" in line or "hypercorn" in line
    ]
    assert noisy == [], seen.decode()
    assert not [line for line in log_lines(seen.decode()) if " ERROR " in line], seen.decode()
    assert not (tmp_path / "data/postgres/postmaster.pid").exists(), "the server should be stopped"


def test_demo_console_defaults_to_warnings_unless_a_level_is_set() -> None:
    assert demo_environment({})["CAMPAIGN_ENGINE_LOGGING_LEVEL"] == "WARNING"
    chosen = demo_environment({"CAMPAIGN_ENGINE_LOGGING_LEVEL": "DEBUG"})
    assert chosen["CAMPAIGN_ENGINE_LOGGING_LEVEL"] == "DEBUG"


def test_demo_accounts_may_point_at_the_cloud_api_and_the_local_simulator() -> None:
    settings = load_settings(None, demo_environment({}))
    assert settings.whatsapp.api_url_prefixes() == (
        "https://graph.facebook.com/v21.0",
        "http://127.0.0.1:",
    )
    mine = demo_environment({"CAMPAIGN_ENGINE_WHATSAPP_ALLOWED_API_URLS": "https://x.example/"})
    assert load_settings(None, mine).whatsapp.api_url_prefixes() == ("https://x.example/",)
