"""A whole campaign through the engine against the simulator over loopback."""

from __future__ import annotations

import trio

from engine.store import recipients
from engine.store.database import Database
from engine.tools.simulator import SimulatorConfig, serve_simulator
from engine.transport.cloud_api import CloudApiGateway
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.store_helpers import make_account, make_campaign, make_contacts


async def test_thousand_recipients_each_sent_exactly_once_with_progress_and_stats(
    db: Database,
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            simulator = await nursery.start(serve_simulator, SimulatorConfig(mps=0))
            account = await make_account(db, api_url=simulator.api_url, messages_per_second=5_000)
            await make_contacts(db, 1_000)
            log = EventLog()
            async with running_engine(db, CloudApiGateway(), engine_settings()) as engine:
                await nursery.start(log.collect, engine)
                campaign = await make_campaign(db, account, messages_per_minute=60_000)
                # Created with scheduleType "now": the supervisor is told by NOTIFY.
                completed = await log.wait_for("campaign:completed", campaign)
            nursery.cancel_scope.cancel()

    state = simulator.state
    accepted = state.accepted_by_callback
    ids = [r["id"] for r in await db.fetch("SELECT id FROM campaign_recipients")]
    rejected = await db.fetchval("SELECT id FROM campaign_recipients WHERE phone = '+15550000000'")
    # The reference is `<recipient id>.<signature>` (engine/core/callback_reference.py).
    assert sorted(int(k.split(".")[0]) for k in accepted) == sorted(i for i in ids if i != rejected)
    assert set(accepted.values()) == {1}
    # +15550000000 ends in 0000: the simulator fails it with 131026, permanently.
    assert await recipients.count_by_status(db, campaign) == {"sent": 999, "failed": 1}

    progress = log.of(campaign, "campaign:progress")
    assert [e.payload["processedCount"] for e in progress] == list(range(100, 1_001, 100))
    assert progress[-1].payload["progress"] == 100.0
    assert progress[-1].payload["sentCount"] == 999
    assert progress[-1].payload["failedCount"] == 1
    stats = log.of(campaign, "campaign:stats")
    assert len(stats) == 20
    assert [e.payload["stats"]["sent"] + e.payload["stats"]["failed"] for e in stats] == list(
        range(50, 1_001, 50)
    )
    names = log.names(campaign)
    assert names[0] == "campaign:started" and names[-1] == "campaign:completed"
    final = completed.payload["campaign"]
    assert final["status"] == "completed" and final["progress"] == 100.0
    assert final["stats"]["sent"] == 999 and final["metrics"]["failure_rate"] == 0.1
