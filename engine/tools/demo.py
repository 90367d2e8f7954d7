"""`campaign-engine demo`: a zero-setup tour in one process.

The database is the configured one (`DATABASE_URL`) or an embedded PostgreSQL in
`.data/`. The JWT and webhook secrets are generated unless set. One trio run holds
the daemon (`engine.daemon.serve`, which opens its own trio-asyncio loop) and the
Cloud API simulator beside it, its webhooks pointed at the daemon. The sample
data goes in through the public HTTP API, as a user's script would, for user
`demo`: an account on the simulator, 2,000 contacts (upserted, so a second run
reuses them) and three new campaigns: one running at 600/min, one scheduled a
minute ahead, and an A/B test of two variants with tracked links (their short links
point at the daemon, `links.base_url`, unless configured). The simulator does not
click links: the banner prints one a recipient was sent, for the user to follow.
Runs until Ctrl-C (exit 0).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import msgspec
import trio

from api.auth import issue_token
from engine.core.tracked_links import link_prefix
from engine.daemon import Listening, configure_logging, serve
from engine.settings import (
    LinksSettings,
    Settings,
    SettingsError,
    WhatsAppSettings,
    load_settings,
)
from engine.tools.simulator import SimulatorConfig, SimulatorHandle, serve_simulator
from engine.transport.http1 import HTTPConnection, split_url

log = logging.getLogger(__name__)

DEMO_USER = "demo"
ACCOUNT_NAME = "Demo account"
CONTACTS = 2_000
LATENCY_MS = 50.0
LINK_WAIT_SECONDS = 10.0  # for a first tracked link to show in the banner
# The simulator listens on loopback, on a port chosen at start: accounts may point there.
SIMULATOR_URL_PREFIX = "http://127.0.0.1:"
ALLOWED_API_URLS = "CAMPAIGN_ENGINE_WHATSAPP_ALLOWED_API_URLS"

_FIRST = ("Ana", "Ben", "Chloé", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas")
_LAST = ("Silva", "Okafor", "Martin", "Patel", "Rossi", "Kim", "Novak", "García", "Berg", "Ali")
_COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli")


class DemoError(Exception):
    """The API refused a demo request; the message says which and why."""


def demo_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with generated secrets where none are set; the console at WARNING unless a
    level is given (the banner is what a newcomer needs to see, then only what goes wrong);
    and, unless set, accounts allowed to point at the Cloud API and at the local simulator."""
    env = dict(environ)
    for name in ("ENGINE_JWT_SECRET", "WHATSAPP_APP_SECRET"):
        if not env.get(name):
            env[name] = secrets.token_urlsafe(32)
    if not env.get("CAMPAIGN_ENGINE_LOGGING_LEVEL"):
        env["CAMPAIGN_ENGINE_LOGGING_LEVEL"] = "WARNING"
    if not env.get(ALLOWED_API_URLS):
        cloud_api = env.get("WHATSAPP_API_URL") or WhatsAppSettings().api_url
        env[ALLOWED_API_URLS] = f"{cloud_api},{SIMULATOR_URL_PREFIX}"
    return env


def with_link_base(settings: Settings, port: int) -> Settings:
    """Tracked links point at the demo's own API port unless links.base_url is set."""
    if settings.links.base_url is not None:
        return settings
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a wildcard is no address to click
    if ":" in host:
        host = f"[{host}]"
    return msgspec.structs.replace(settings, links=LinksSettings(base_url=f"http://{host}:{port}"))


def sample_contacts(count: int = CONTACTS) -> list[dict[str, Any]]:
    """Deterministic contacts: names, tags on some, a few opted out, two undeliverable."""
    contacts: list[dict[str, Any]] = []
    for i in range(count):
        every = {"vip": 10, "newsletter": 3, "beta": 7}
        tags = [tag for tag, n in every.items() if i % n == 0]
        # The simulator fails numbers ending in 0000 (131026): a few failures to show.
        phone = f"+1666{i:04d}0000" if i % 500 == 250 else f"+1555{i:06d}1"
        contacts.append(
            {
                "phone": phone,
                "firstName": _FIRST[i % len(_FIRST)],
                "lastName": _LAST[(i // len(_FIRST)) % len(_LAST)],
                "company": _COMPANIES[i % len(_COMPANIES)],
                "tags": tags,
                "optedOut": i % 97 == 13,
            }
        )
    return contacts


class ApiClient:
    """A small JSON client for the daemon's API, over the engine's own HTTP/1.1 transport."""

    def __init__(self, base_url: str, token: str) -> None:
        origin, _ = split_url(base_url + "/")
        self._connection = HTTPConnection(origin, read_timeout=60.0)
        self._auth = (b"authorization", f"Bearer {token}".encode())

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = [self._auth]
        payload = b""
        if body is not None:
            headers.append((b"content-type", b"application/json"))
            payload = msgspec.json.encode(body)
        response = await self._connection.request(method, path, headers, payload)
        document = msgspec.json.decode(response.body)
        if response.status >= 300:
            raise DemoError(f"{method} {path}: HTTP {response.status}: {document.get('message')}")
        return document["data"]

    async def aclose(self) -> None:
        await self._connection.aclose()


async def seed(client: ApiClient, api_url: str) -> list[dict[str, Any]]:
    """The demo account, contacts and three new campaigns; returns the campaigns."""
    accounts = await client.call("GET", "/api/v1/accounts?limit=500")
    existing = [a for a in accounts if a["name"] == ACCOUNT_NAME]
    if existing:
        # A previous run's simulator listened elsewhere.
        account_id = existing[0]["id"]
        await client.call(
            "PATCH", f"/api/v1/accounts/{account_id}", {"apiUrl": api_url, "status": "connected"}
        )
    else:
        account = await client.call(
            "POST",
            "/api/v1/accounts",
            {
                "name": ACCOUNT_NAME,
                "phoneNumberId": "100200300",
                "accessToken": "demo-access-token",
                "apiUrl": api_url,
                "messagesPerSecond": 80,
            },
        )
        account_id = account["id"]
    await client.call("POST", "/api/v1/contacts", {"contacts": sample_contacts()})

    stamp = datetime.now(UTC)
    label = stamp.strftime("%H:%M:%S")
    text = "Hi {{firstName}}, our spring sale starts today at {{company}}!"
    running = await client.call(
        "POST",
        "/api/v1/campaigns",
        {
            "accountId": account_id,
            "name": f"Spring sale ({label})",
            "messageType": "text",
            "messageContent": text,
            "audienceType": "all",
            "scheduleType": "now",
            "throttleConfig": {"messagesPerMinute": 600},
        },
    )
    scheduled = await client.call(
        "POST",
        "/api/v1/campaigns",
        {
            "accountId": account_id,
            "name": f"Newsletter ({label})",
            "messageType": "text",
            "messageContent": "Hello {{firstName}}, here is this month's newsletter.",
            "audienceType": "tags",
            "audienceConfig": {"tags": ["newsletter"]},
            "scheduleType": "scheduled",
            "scheduledAt": (stamp + timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
            "throttleConfig": {"messagesPerMinute": 600},
        },
    )
    ab_test = await client.call(
        "POST",
        "/api/v1/campaigns",
        {
            "accountId": account_id,
            "name": f"Spring offer A/B ({label})",
            "messageType": "text",
            "messageContent": "Hi {{firstName}}, our spring offer: https://example.com/spring",
            "variants": [
                {
                    "name": "Short",
                    "messageContent": "Hi {{firstName}}, 20% off today: "
                    "https://example.com/spring?v=short",
                    "weight": 1,
                },
                {
                    "name": "Personal",
                    "messageContent": "Hello {{firstName}}, {{company}} customers save 20% "
                    "this week: https://example.com/spring?v=personal",
                    "weight": 1,
                },
            ],
            "trackLinks": True,
            "audienceType": "tags",
            "audienceConfig": {"tags": ["vip"]},
            "scheduleType": "now",
            "throttleConfig": {"messagesPerMinute": 600},
        },
    )
    return [running, scheduled, ab_test]


async def first_tracked_link(simulator: SimulatorHandle, base_url: str) -> str | None:
    """A short link the simulator was sent, for the banner; None if none came in time. The
    simulator has no way to signal a send, so its record is looked at now and then."""
    link = re.compile(re.escape(link_prefix(base_url)) + r"[A-Za-z0-9_-]+")
    with trio.move_on_after(LINK_WAIT_SECONDS):
        while True:
            for request in list(simulator.state.requests):
                found = link.search(request.body.decode(errors="replace"))
                if found and request.error_code is None:
                    return found.group(0)
            await trio.sleep(0.1)
    return None


def _banner(
    listening: Listening, token: str, simulator: SimulatorHandle, ids: list[str], link: str | None
) -> str:
    url = listening.url
    click = link or "none sent yet: the dashboard's A/B card counts them once its messages go out"
    return "\n".join(
        (
            "",
            "campaign-engine demo is running (user 'demo')",
            f"  API:        {url}/api/v1",
            f"  Token:      {token}",
            f"  Dashboard:  {url}/",
            f"  API docs:   {url}/docs",
            f"  Simulator:  {simulator.api_url}",
            f"  Campaigns:  {ids[0]} (running, 600/min), {ids[1]} (scheduled in 1 minute)",
            f"  A/B test:   {ids[2]} (two variants to the vip tag, tracked links: a row per"
            " variant and the click rate in the dashboard)",
            f"  Click:      {click}",
            "              (the simulator does not click: follow a link to count a click)",
            "",
            f"  curl -H 'Authorization: Bearer {token}' {url}/api/v1/campaigns",
            f"  campaign-engine watch {ids[0]} --url {url} --token {token}",
            f"  campaign-engine watch {ids[2]} --url {url} --token {token}",
            "",
            "Press Ctrl-C to stop.",
            "",
        )
    )


class Stack(msgspec.Struct, frozen=True):
    """A running daemon and the simulator its accounts can point at."""

    listening: Listening
    simulator: SimulatorHandle
    engine: Any  # engine.service.engine.Engine


async def serve_with_simulator(
    settings: Settings,
    dsn: str,
    *,
    host: str,
    port: int,
    latency_ms: float = LATENCY_MS,
    mps: int = 80,
    task_status: trio.TaskStatus[Stack] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The daemon and, beside it, a simulator whose webhooks go to the daemon; until the
    daemon stops (SIGINT/SIGTERM) or cancellation. `mps`: the simulator's per phone number
    limit, as the Cloud API's (0: none). Also used by the tests."""
    app_secret = settings.whatsapp.app_secret or ""
    async with trio.open_nursery() as nursery:

        async def daemon(task_status: trio.TaskStatus[tuple[Listening, Any]]) -> None:
            await serve(settings, dsn, host=host, port=port, task_status=task_status)
            nursery.cancel_scope.cancel()  # the daemon stopped (signal): so does the simulator

        listening, engine = await nursery.start(daemon)
        simulator: SimulatorHandle = await nursery.start(
            serve_simulator,
            SimulatorConfig(
                latency_ms=latency_ms,
                mps=mps,
                webhook_url=f"{listening.url}/webhooks/whatsapp",
                app_secret=app_secret,
            ),
        )
        task_status.started(Stack(listening, simulator, engine))


async def run_demo(settings: Settings, dsn: str, *, host: str, port: int) -> None:
    """Serve the demo until SIGINT/SIGTERM."""
    assert settings.auth.jwt_secret is not None
    async with trio.open_nursery() as nursery:
        stack: Stack = await nursery.start(
            partial(serve_with_simulator, settings, dsn, host=host, port=port)
        )
        token = issue_token(settings.auth.jwt_secret, DEMO_USER, settings.auth.token_ttl_seconds)
        client = ApiClient(stack.listening.url, token)
        try:
            campaigns = await seed(client, stack.simulator.api_url)
        finally:
            await client.aclose()
        assert settings.links.base_url is not None  # main() sets it (with_link_base)
        link = await first_tracked_link(stack.simulator, settings.links.base_url)
        ids = [c["id"] for c in campaigns]
        banner = _banner(stack.listening, token, stack.simulator, ids, link)
        print(banner, flush=True)


def main(*, port: int = 8080) -> int:
    from engine.tools.embedded_db import database_url

    try:
        settings = with_link_base(load_settings(None, demo_environment(os.environ)), port)
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging(settings.logging.level)
    # hypercorn's "Running on ..." repeats the daemon's "listening on"; its errors still show.
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    try:
        with database_url(settings) as dsn:
            trio.run(partial(run_demo, settings, dsn, host=settings.server.host, port=port))
    except KeyboardInterrupt:  # Ctrl-C before the daemon's own signal handling took over
        pass
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    return 0
