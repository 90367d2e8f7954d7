"""Running the whole engine in a test: real PostgreSQL, a gateway of the test's choice."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from engine.gateway import Gateway
from engine.messages import CampaignEvent, Lagged
from engine.service.engine import Engine, open_engine
from engine.settings import Settings, load_settings
from engine.store.campaigns import update_campaign
from engine.store.database import Database
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER
from tests.virtual_time import VirtualTimeDatabase

# HS256 wants a key as long as its hash (RFC 7518, 3.2); PyJWT warns about a shorter one.
JWT_SECRET = "test-secret-of-at-least-32-bytes-for-hs256"


def engine_settings(**overrides: str) -> Settings:
    environ = {"ENGINE_JWT_SECRET": JWT_SECRET, "WHATSAPP_APP_SECRET": "app-secret"}
    environ.update({f"CAMPAIGN_ENGINE_{k.upper()}": v for k, v in overrides.items()})
    return load_settings(None, environ)


@asynccontextmanager
async def running_engine(
    db: Database,
    gateway: Gateway,
    settings: Settings | None = None,
    *,
    instance_id: str | None = None,
) -> AsyncIterator[Engine]:
    async with open_engine(
        db,
        settings or engine_settings(),
        gateway,
        instance_id=instance_id or f"test-{uuid.uuid4()}",
    ) as engine:
        yield engine


class EventLog:
    """Collects every event the broadcaster publishes, and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[CampaignEvent] = []
        self._changed = trio.Event()

    def names(self, campaign_id: str | None = None) -> list[str]:
        return [e.name for e in self.of(campaign_id)]

    def of(self, campaign_id: str | None = None, name: str | None = None) -> list[CampaignEvent]:
        return [
            e
            for e in self.events
            if (campaign_id is None or e.payload.get("campaignId") == campaign_id)
            and (name is None or e.name == name)
        ]

    async def wait_for(self, name: str, campaign_id: str, count: int = 1) -> CampaignEvent:
        while len(self.of(campaign_id, name)) < count:
            await self._changed.wait()
        return self.of(campaign_id, name)[count - 1]

    async def collect(self, engine: Engine, *, task_status: trio.TaskStatus[None]) -> None:
        async with engine.broadcaster.subscribe(max_queue=100_000) as events:
            task_status.started()
            async for event in events:
                assert not isinstance(event, Lagged), "the test's subscriber lagged"
                self.events.append(event)
                self._changed.set()
                self._changed = trio.Event()


async def change_rate(
    db: VirtualTimeDatabase, engine: Engine, campaign_id: str, per_minute: float
) -> None:
    """Edit a campaign's rate as PATCH does, at one virtual instant: the clock stands
    still until the engine's supervisor has been told."""
    with db.hold.held():
        await update_campaign(
            db,
            OWNER,
            campaign_id,
            lambda _row: {
                "throttle_config": {
                    "messagesPerMinute": per_minute,
                    "batchSize": 100,
                    "delayBetweenBatches": 0,
                }
            },
        )
        await engine.throttle_changed(campaign_id)
        await db.heard(f"throttle:{campaign_id}")


async def send_times_to_completion(
    db: Database, gateway: ScriptedGateway, campaigns: list[str]
) -> dict[str, list[float]]:
    """Run the engine until every one of `campaigns` completed; each one's send
    times at the gateway, in order."""
    log = EventLog()
    async with trio.open_nursery() as nursery:
        async with running_engine(db, gateway, engine_settings()) as engine:
            await nursery.start(log.collect, engine)
            for campaign in campaigns:
                await log.wait_for("campaign:completed", campaign)
        nursery.cancel_scope.cancel()
    rows = await db.fetch("SELECT id, campaign_id FROM campaign_recipients")
    campaign_of = {r["id"]: str(r["campaign_id"]) for r in rows}
    sent_at: dict[str, list[float]] = {c: [] for c in campaigns}
    for send in gateway.sends:
        sent_at[campaign_of[send.message.recipient_id]].append(send.at)
    return sent_at
