"""Signals reach the daemons at once (engine/store/account_events.py): the campaigns a
template pause stops and an APPROVED resumes are announced on the command channel in
the same transaction, so their owners act now, not at their next claim."""

from __future__ import annotations

import trio

from engine.store import account_events
from engine.store.campaign_runs import COMMAND_CHANNEL
from engine.store.database import Database
from tests.store_helpers import make_account, make_contacts, utc_now
from tests.test_signals_campaigns import WABA, template_campaign, template_signal


async def test_a_template_pause_and_its_approval_are_announced_to_the_daemons(
    db: Database,
) -> None:
    heard: list[str] = []
    arrived = trio.Event()

    def on_command(payload: str) -> None:
        heard.append(payload)
        arrived.set()

    async def announced(payload: str) -> None:
        nonlocal arrived
        while payload not in heard:
            await arrived.wait()
            arrived = trio.Event()

    with trio.fail_after(30):
        account = await make_account(db, business_account_id=WABA)
        await make_contacts(db, 2)
        campaign = await template_campaign(db, account, schedule_type="manual")
        await db.execute("UPDATE campaigns SET status = 'running' WHERE id = $1", campaign)
        listener = await db.listen({COMMAND_CHANNEL: on_command})
        try:
            await account_events.apply_signals(db, [template_signal("PAUSED")], now=utc_now())
            await announced(f"pause:{campaign}")
            await account_events.apply_signals(db, [template_signal("APPROVED")], now=utc_now())
            await announced(f"resume:{campaign}")
        finally:
            await listener.stop()
