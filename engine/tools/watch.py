"""`campaign-engine watch CAMPAIGN_ID`: a campaign's progress in the terminal.

A separate client process, so plain asyncio: aiohttp for the API, python-socketio's
AsyncClient for the stream. The initial state comes from `GET /api/v1/campaigns/:id`;
after the socket connects the campaign is read again, so no event between the two
reads is lost. Ends on `campaign:completed|failed|cancelled` with a table of the
final figures. Exit status: 0 completed or cancelled, 1 failed, 2 no token, refused
token, unknown campaign or unreachable daemon.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import socketio
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

FINAL = ("completed", "failed", "cancelled")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class WatchError(Exception):
    """Why the campaign cannot be watched; `str()` is the message for the user."""


class CampaignWatch:
    """The campaign as last seen, and the progress bar that shows it."""

    def __init__(self, campaign: dict[str, Any], progress: Progress) -> None:
        self.campaign = campaign
        self.progress = progress
        self.task: TaskID = progress.add_task(
            campaign["name"], total=max(campaign["total_recipients"], 1), status=""
        )
        self.finished = asyncio.Event()
        self.show()

    @property
    def id(self) -> str:
        return str(self.campaign["id"])

    def show(self) -> None:
        c = self.campaign
        stats = c["stats"]
        total = max(c["total_recipients"], 1)
        completed = round(float(c["progress"]) / 100 * total)
        status = (
            f"{c['status']}  sent {stats['sent']}  delivered {stats['delivered']}"
            f"  failed {stats['failed']}{clicks_note(c)}{waiting_note(c)}"
        )
        self.progress.update(self.task, total=total, completed=completed, status=status)

    def replace(self, campaign: dict[str, Any]) -> None:
        self.campaign = campaign
        self.show()
        if campaign["status"] in FINAL:
            self.finished.set()

    def apply(self, event: str, payload: dict[str, Any]) -> None:
        """One Socket.IO event (docs/socketio-events.md)."""
        if payload.get("campaignId") != self.id:
            return
        c = dict(self.campaign)
        match event:
            case "campaign:started":
                c["status"] = "running"
                c["total_recipients"] = payload.get("totalRecipients", c["total_recipients"])
            case "campaign:progress":
                c["progress"] = payload["progress"]
                c["total_recipients"] = payload["totalRecipients"]
                stats = dict(c["stats"])
                stats["sent"] = max(stats["sent"], payload["sentCount"])
                stats["failed"] = max(stats["failed"], payload["failedCount"])
                c["stats"] = stats
                if c["status"] not in (*FINAL, "paused"):
                    c["status"] = "running"
            case "campaign:stats":
                c["stats"], c["metrics"] = payload["stats"], payload["metrics"]
            case "campaign:paused":
                c["status"] = "paused"
                c["error"] = payload.get("reason")
            case "campaign:resumed":
                c["status"] = "running"
            case "campaign:completed":
                c = payload["campaign"]
            case "campaign:failed":
                c["status"], c["error"] = "failed", payload.get("error")
            case "campaign:cancelled":
                c["status"] = "cancelled"
            case "campaign:deferred" if payload.get("reason") == "messaging_limit":
                c["deferred_count"] = payload.get("count", 0)
                c["deferred_until"] = payload.get("deferredUntil")
            case "campaign:deferred":
                c["waiting_for_window"] = True
                c["next_window_opens_at"] = payload.get("deferredUntil")
        self.replace(c)


def clicks_note(campaign: dict[str, Any]) -> str:
    """A campaign with tracked links: its recipients who clicked, over those delivered
    (a first click emits `campaign:stats`, so this stays live)."""
    if not campaign.get("track_links"):
        return ""
    clicked = campaign["stats"].get("clicked", 0)
    rate = float(campaign.get("metrics", {}).get("click_rate", 0.0))
    return f"  clicked {clicked} (click rate {rate:.2f}%)"


def waiting_note(campaign: dict[str, Any]) -> str:
    """What a running campaign waits for: the messaging limit, its send window."""
    if campaign.get("status") != "running":
        return ""
    if campaign.get("deferred_until"):
        return f"  waiting for the messaging limit until {campaign['deferred_until']}"
    if campaign.get("waiting_for_window") and campaign.get("next_window_opens_at"):
        return f"  waiting for the send window until {campaign['next_window_opens_at']}"
    return ""


def summary_table(campaign: dict[str, Any]) -> Table:
    stats, metrics = campaign["stats"], campaign["metrics"]
    table = Table(title=f"{campaign['name']}: {campaign['status']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("status", str(campaign["status"])),
        ("recipients", str(campaign["total_recipients"])),
        ("progress", f"{float(campaign['progress']):.2f}%"),
        *((name, str(stats[name])) for name in ("sent", "delivered", "read", "replied")),
        ("failed", str(stats["failed"])),
        ("in doubt", str(stats["in_doubt"])),
        ("pending", str(stats["pending"])),
        ("delivery rate", f"{metrics['delivery_rate']:.2f}%"),
        ("read rate", f"{metrics['read_rate']:.2f}%"),
        ("reply rate", f"{metrics['reply_rate']:.2f}%"),
        ("failure rate", f"{metrics['failure_rate']:.2f}%"),
        ("started", str(campaign.get("started_at") or "-")),
        ("finished", str(campaign.get("completed_at") or "-")),
    ]
    if campaign.get("track_links"):
        rows.append(("clicked", str(stats.get("clicked", 0))))
        rows.append(("click rate", f"{metrics.get('click_rate', 0.0):.2f}%"))
    if campaign.get("error"):
        rows.append(("error", str(campaign["error"])))
    rows += _variant_rows(campaign)
    for name, value in rows:
        table.add_row(name, value)
    return table


def _variant_rows(campaign: dict[str, Any]) -> list[tuple[str, str]]:
    """One line per A/B variant (its counts are in the campaign's detail), and the test."""
    rows = []
    for variant in campaign.get("variants") or []:
        stats, metrics = variant.get("stats"), variant.get("metrics")
        if stats is None or metrics is None:
            continue
        rows.append(
            (
                f"variant {variant['name']}",
                f"{variant['recipients']} recipients, sent {stats['sent']}, read"
                f" {metrics['read_rate']:.2f}%, replied {metrics['reply_rate']:.2f}%,"
                f" clicked {metrics['click_rate']:.2f}%",
            )
        )
    test = campaign.get("ab_test")
    if test:
        winner = f": {test['winner']} by {test['metric']}" if test.get("winner") else ""
        rows.append(("A/B test", f"{test['phase']}{winner}"))
    return rows


async def fetch_campaign(
    http: aiohttp.ClientSession, url: str, token: str, campaign_id: str
) -> dict[str, Any]:
    try:
        async with http.get(
            f"{url}/api/v1/campaigns/{campaign_id}", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            document: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise WatchError(f"{url}: HTTP {response.status}: {document.get('message')}")
    except aiohttp.ClientError as error:
        raise WatchError(f"{url}: cannot reach the daemon: {error}") from None
    data: dict[str, Any] = document["data"]
    return data


async def watch(campaign_id: str, url: str, token: str, console: Console) -> dict[str, Any]:
    """Follow the campaign until it is final; return its final object."""
    url = url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        first = await fetch_campaign(http, url, token, campaign_id)
        if first["status"] in FINAL:
            return first
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        client = socketio.AsyncClient(reconnection=True, logger=False, engineio_logger=False)
        with progress:
            state = CampaignWatch(first, progress)
            for event in (
                "campaign:started",
                "campaign:progress",
                "campaign:stats",
                "campaign:paused",
                "campaign:resumed",
                "campaign:completed",
                "campaign:failed",
                "campaign:cancelled",
                "campaign:deferred",
            ):
                client.on(event, _handler(state, event))
            try:
                await client.connect(url, auth={"token": token}, wait_timeout=10)
            except socketio.exceptions.ConnectionError as error:
                raise WatchError(f"{url}: Socket.IO connection refused: {error}") from None
            try:
                # Events from before the socket joined its room are in this read.
                state.replace(await fetch_campaign(http, url, token, campaign_id))
                await state.finished.wait()
            finally:
                await client.disconnect()
        final = state.campaign
        if final["status"] != "completed":  # failed/cancelled events carry no figures
            final = await fetch_campaign(http, url, token, campaign_id)
        return final


def _handler(state: CampaignWatch, event: str) -> Any:
    async def handle(payload: dict[str, Any]) -> None:
        state.apply(event, payload)

    return handle


def main(campaign_id: str, *, url: str, token: str | None) -> int:
    console = Console()
    errors = Console(stderr=True)
    if not token:
        errors.print("watch: a bearer token is required (--token or CAMPAIGN_ENGINE_TOKEN)")
        return EXIT_USAGE
    try:
        final = asyncio.run(watch(campaign_id, url, token, console))
    except WatchError as error:
        errors.print(f"watch: {error}", markup=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    console.print(summary_table(final))
    return EXIT_FAILED if final["status"] == "failed" else EXIT_OK
