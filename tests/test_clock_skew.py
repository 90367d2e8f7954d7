"""Two daemons whose wall clocks disagree share one database and one Redis: leases
follow PostgreSQL's clock and budgets Redis's, so neither takes the other's campaign
early nor do they together exceed a number's rate. Real time throughout."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import trio

from engine.clock import WallClock
from engine.service.engine import Engine, open_engine
from engine.settings import Settings, load_settings
from engine.store.database import Database, open_database
from tests.conftest import REDIS_URL
from tests.engine_helpers import JWT_SECRET, EventLog, engine_settings
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import make_account, make_campaign, make_contacts


class SkewedClock(WallClock):
    """This process's wall clock, `offset` seconds off."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self._offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        return super().now() + self._offset


@asynccontextmanager
async def daemon(
    database_url: str, settings: Settings, gateway: ScriptedGateway, clock: WallClock
) -> AsyncIterator[Engine]:
    async with (
        open_database(database_url, min_size=1, max_size=6) as db,
        open_engine(
            db, settings, gateway, instance_id=f"skewed-{uuid.uuid4().hex[:6]}", clock=clock
        ) as engine,
    ):
        yield engine


def most_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] > window:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_a_daemon_whose_clock_runs_ahead_takes_no_lease_early(
    db: Database, database_url: str
) -> None:
    settings = engine_settings(engine_lease_ttl_seconds="30", engine_max_running_campaigns="1")
    gateway_a, gateway_b = ScriptedGateway(latency=0.01), ScriptedGateway(latency=0.01)
    with trio.fail_after(60):
        account = await make_account(db)
        await make_contacts(db, 100)
        async with daemon(database_url, settings, gateway_a, SkewedClock(0)) as a:
            gateway_a.block_after(1)
            campaign = await make_campaign(db, account, messages_per_minute=600)
            await gateway_a.wait_held(1)
            gateway_a.release()
            # B's clock is a minute ahead: by it, A's lease (30 s) expired long ago.
            async with daemon(database_url, settings, gateway_b, SkewedClock(60)) as b:
                with trio.move_on_after(3):  # B looks for claimable work every second
                    await trio.sleep_forever()
                assert b.statistics().supervisor.taken_over == 0
                assert not gateway_b.sends
                assert [r.campaign_id for r in a.statistics().supervisor.running] == [campaign]


async def two_skewed_daemons_on_one_number(db: Database, database_url: str) -> list[float]:
    """Two daemons, clocks 0.8 s apart, one campaign each on one number at 20/s
    (campaigns want 50/s): when each request was written, on the real clock."""
    settings = load_settings(
        None,
        {
            "ENGINE_JWT_SECRET": JWT_SECRET,
            "REDIS_URL": REDIS_URL,
            "CAMPAIGN_ENGINE_ENGINE_MAX_RUNNING_CAMPAIGNS": "1",
        },
    )
    number = f"PN-skew-{uuid.uuid4().hex[:8]}"  # a budget no other run shares
    gateways = [ScriptedGateway(latency=0.005), ScriptedGateway(latency=0.005)]
    log = EventLog()
    with trio.fail_after(60):
        account = await make_account(db, phone_number_id=number, messages_per_second=20)
        await make_contacts(db, 40)
        async with (
            trio.open_nursery() as nursery,
            daemon(database_url, settings, gateways[0], SkewedClock(-0.4)) as a,
            daemon(database_url, settings, gateways[1], SkewedClock(0.4)) as b,
        ):
            await nursery.start(log.collect, a)
            await nursery.start(log.collect, b)
            # Each daemon runs one (max_running_campaigns = 1), both on one number.
            campaigns = [
                await make_campaign(db, account, messages_per_minute=3_000, batch_size=10)
                for _ in range(2)
            ]
            for campaign in campaigns:
                await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()
    assert all(gateway.sends for gateway in gateways)  # both daemons sent
    times = [send.at for gateway in gateways for send in gateway.sends]
    assert len(times) == 80
    return times


async def test_daemons_with_skewed_clocks_never_exceed_a_numbers_rate(
    db: Database, database_url: str
) -> None:
    times = await two_skewed_daemons_on_one_number(db, database_url)
    # Slices by each daemon's own clock would overlap by 0.8 s (~36 in a second).
    assert most_in_any_window(times) <= 20
    assert max(times) - min(times) <= 80 / 20 * 1.06 + 0.5  # and they share all of it
