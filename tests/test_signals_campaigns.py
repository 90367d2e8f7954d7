"""Signals acting on campaigns, the whole engine on MockClock: a PAUSED template pauses
the campaigns sending it and APPROVED resumes exactly those (never one the user
paused), an account restriction pauses every campaign of the account, and each
signal is in the account event log."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from engine.actors import broadcaster as broadcaster_actor
from engine.actors import webhook_applier
from engine.actors.broadcaster import Broadcaster
from engine.actors.webhook_applier import WebhookApplier
from engine.messages import AccountSignal, CampaignEvent, QualitySignal, TemplateStatusSignal
from engine.service.engine import Engine
from engine.settings import WebhookSettings
from engine.store import account_events, campaign_runs
from engine.store.campaigns import CampaignInput, create_campaign
from engine.store.database import Database
from tests.engine_helpers import EventLog, engine_settings, running_engine
from tests.fake_gateway import ScriptedGateway
from tests.store_helpers import OWNER, make_account, make_contacts, utc_now
from tests.test_webhook_applier import FailingDatabase
from tests.virtual_time import VirtualTimeDatabase, virtual_time_db

__all__ = ["virtual_time_db"]  # the virtual-time database replaces conftest's `db` here

WABA = "102290129340398"


async def template_campaign(
    db: Database,
    account_id: str,
    *,
    name: str = "promo",
    language: Any = "en_US",
    schedule_type: str = "now",
    scheduled_at: Any = None,
) -> str:
    row = await create_campaign(
        db,
        OWNER,
        CampaignInput(
            account_id=account_id,
            name=f"{name} campaign",
            message_type="template",
            message_content={"name": name, "language": language},
            audience_type="all",
            audience_config={},
            schedule_type=schedule_type,
            scheduled_at=scheduled_at,
            # 1 message/s: 20 recipients keep a campaign running for 20 virtual seconds.
            throttle_config={"messagesPerMinute": 60, "batchSize": 5, "delayBetweenBatches": 0},
        ),
        now=utc_now(),
    )
    return str(row["id"])


def template_signal(event: str, name: str = "promo", waba: str | None = WABA) -> Any:
    content = f'{{"event": "{event}", "message_template_name": "{name}"}}'.encode()
    return TemplateStatusSignal(waba, event, name, "en_US", "77", "LOW_QUALITY", content)


async def status_of(db: Database, campaign_id: str) -> tuple[str, str | None, str | None]:
    row = await db.fetchrow(
        "SELECT status, pause_reason, paused_by_signal FROM campaigns WHERE id = $1", campaign_id
    )
    assert row is not None
    return row["status"], row["pause_reason"], row["paused_by_signal"]


async def events_of(engine: Engine, account_id: str) -> list[dict[str, Any]]:
    page = await engine.account_events.list(OWNER, account_id, before=None, limit=50)
    return page.items


async def test_a_paused_template_pauses_its_campaigns_and_approved_resumes_only_those(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway()
    log = EventLog()
    settings = engine_settings(engine_progress_every="5")
    with trio.fail_after(36_000):
        account = await make_account(db, business_account_id=WABA)
        other_waba = await make_account(db, business_account_id="999", phone_number_id="PN9")
        await make_contacts(db, 20)
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:
                await nursery.start(log.collect, engine)
                promo = await template_campaign(db, account)
                other_language = await template_campaign(db, account, language={"code": "de"})
                other_template = await template_campaign(db, account, name="welcome")
                elsewhere = await template_campaign(db, other_waba)
                user_paused = await template_campaign(db, account)
                await engine.pause(user_paused, OWNER)
                await log.wait_for("campaign:progress", promo)

                assert engine.submit_status_updates([template_signal("PAUSED")])
                paused = await log.wait_for("campaign:paused", promo)
                assert "promo (en_US)" in paused.payload["reason"]
                for running in (other_language, other_template, elsewhere):
                    assert (await status_of(db, running))[0] in ("running", "completed")

                assert engine.submit_status_updates([template_signal("APPROVED")])
                await log.wait_for("campaign:resumed", promo)
                await log.wait_for("campaign:completed", promo)
                for done in (other_language, other_template, elsewhere):
                    await log.wait_for("campaign:completed", done)
                logged = await events_of(engine, account)
                statistics = engine.statistics().webhooks
            nursery.cancel_scope.cancel()

    assert await status_of(db, promo) == ("completed", None, None)
    # The user's pause is theirs: APPROVED leaves it paused.
    assert await status_of(db, user_paused) == ("paused", None, None)
    assert "campaign:resumed" not in log.names(user_paused)
    assert [(e["kind"], e["event"]) for e in logged] == [
        ("message_template_status_update", "APPROVED"),
        ("message_template_status_update", "PAUSED"),
    ]
    approved, paused_event = logged
    assert paused_event["paused_campaigns"] == [promo] and paused_event["resumed_campaigns"] == []
    assert approved["resumed_campaigns"] == [promo] and approved["paused_campaigns"] == []
    assert paused_event["content"]["message_template_name"] == "promo"
    assert paused_event["account_id"] == account and approved["id"] > paused_event["id"]
    assert (statistics.signals_logged, statistics.signals_unmatched) == (2, 0)
    assert await events_of_db(db, other_waba) == 0


async def events_of_db(db: Database, account_id: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM account_events WHERE account_id = $1", account_id
    )
    return count


async def test_a_restriction_pauses_every_campaign_and_a_later_approval_resumes_none(
    db: Database, autojump_clock: trio.testing.MockClock
) -> None:
    gateway = ScriptedGateway()
    log = EventLog()
    settings = engine_settings(engine_progress_every="5")
    with trio.fail_after(36_000):
        # Two numbers of one WABA: each signal concerns (and is logged for) both.
        first = await make_account(db, business_account_id=WABA, phone_number_id="PN1")
        second = await make_account(db, business_account_id=WABA, phone_number_id="PN2")
        await make_contacts(db, 20)
        async with trio.open_nursery() as nursery:
            async with running_engine(db, gateway, settings) as engine:
                await nursery.start(log.collect, engine)
                running = await template_campaign(db, first)
                template_paused = await template_campaign(db, second, name="welcome")
                later = utc_now().replace(year=utc_now().year + 1)
                scheduled = await template_campaign(
                    db, second, name="other", schedule_type="scheduled", scheduled_at=later
                )
                await log.wait_for("campaign:progress", running)
                assert engine.submit_status_updates([template_signal("PAUSED", name="welcome")])
                await log.wait_for("campaign:paused", template_paused)

                restriction = AccountSignal(
                    WABA,
                    "ACCOUNT_RESTRICTION",
                    "15550783881",
                    ("RESTRICTED_BIZ_INITIATED_MESSAGING",),
                    None,
                    None,
                    b'{"event": "ACCOUNT_RESTRICTION"}',
                )
                nowhere = AccountSignal("nobody", "ACCOUNT_VIOLATION", None, (), None, None, b"{}")
                assert engine.submit_status_updates([restriction, nowhere])
                await log.wait_for("campaign:paused", running)
                # No actor runs a scheduled campaign: the applier says it paused.
                quiet = await log.wait_for("campaign:paused", scheduled)
                assert engine.submit_status_updates([template_signal("APPROVED", name="welcome")])
                # The resume would be in the transaction that logs the approval.
                await wait_for_events(db, second, 3)
                statistics = engine.statistics().webhooks
            nursery.cancel_scope.cancel()

    reason = "WhatsApp restricted the account: RESTRICTED_BIZ_INITIATED_MESSAGING"
    assert quiet.payload["reason"] == reason
    for campaign in (running, template_paused, scheduled):
        assert await status_of(db, campaign) == ("paused", reason, "account:ACCOUNT_RESTRICTION")
    assert "campaign:resumed" not in log.names(template_paused)
    assert (await events_of_db(db, first), await events_of_db(db, second)) == (3, 3)
    assert (statistics.signals_logged, statistics.signals_unmatched, statistics.unmatched) == (
        6,
        1,
        1,
    )


async def wait_for_events(db: Database, account_id: str, count: int) -> None:
    """The applier works on its own and announces nothing when no campaign changes:
    look for its rows every virtual tenth of a second."""
    while await events_of_db(db, account_id) < count:  # noqa: ASYNC110
        await trio.sleep(0.1)


async def test_leaving_paused_forgets_the_signal_pause(db: Database) -> None:
    """Paused for a template, resumed by the user, paused by the user: APPROVED must
    not resume it."""
    with trio.fail_after(30):
        account = await make_account(db, business_account_id=WABA)
        await make_contacts(db, 3)
        campaign = await template_campaign(db, account, schedule_type="manual")
        paused = await account_events.apply_signals(db, [template_signal("PAUSED")], now=utc_now())
        assert paused.paused == []  # a draft is not sending anything
        await engine_like_start_and_pause(db, campaign)
        assert (await status_of(db, campaign))[2] is None
        applied = await account_events.apply_signals(
            db, [template_signal("APPROVED")], now=utc_now()
        )
    assert applied.resumed == [] and applied.logged == 1
    assert (await status_of(db, campaign))[0] == "paused"


async def engine_like_start_and_pause(db: Database, campaign_id: str) -> None:
    now = utc_now()
    await campaign_runs.apply_action(db, campaign_id, OWNER, "start", now=now)
    await account_events.apply_signals(db, [template_signal("PAUSED")], now=now)
    assert (await status_of(db, campaign_id))[2] == "template:en_US:promo"
    await campaign_runs.apply_action(db, campaign_id, OWNER, "resume", now=now)
    await campaign_runs.apply_action(db, campaign_id, OWNER, "pause", now=now)


async def test_a_template_is_found_in_the_variants_and_either_language_form(db: Database) -> None:
    """A campaign with A/B variants sends its variants' messages, not its own."""
    with trio.fail_after(30):
        account = await make_account(db, business_account_id=WABA)
        await make_contacts(db, 3)
        own = await template_campaign(db, account, schedule_type="manual")
        coded = await template_campaign(db, account, language={"code": "en_US"})
        german = await template_campaign(db, account, language="de")
        varied = await template_campaign(db, account, name="welcome", schedule_type="manual")
        await db.execute(
            "UPDATE campaigns SET variants = $2 WHERE id = $1",
            varied,
            [
                {"name": "A", "weight": 1, "messageContent": {"name": "welcome", "language": "en"}},
                {
                    "name": "B",
                    "weight": 1,
                    "messageContent": {"name": "promo", "language": "en_US"},
                },
            ],
        )
        for campaign in (own, varied):
            await campaign_runs.apply_action(db, campaign, OWNER, "start", now=utc_now())
        # `own` names promo only as its own content, and then takes variants that do not.
        await db.execute(
            "UPDATE campaigns SET variants = $2 WHERE id = $1",
            own,
            [
                {
                    "name": "A",
                    "weight": 1,
                    "messageContent": {"name": "other", "language": "en_US"},
                },
                {"name": "B", "weight": 1, "messageContent": {"name": "more", "language": "en_US"}},
            ],
        )
        applied = await account_events.apply_signals(db, [template_signal("PAUSED")], now=utc_now())
    assert sorted(c.campaign_id for c in applied.paused) == sorted([coded, varied])
    assert (await status_of(db, german))[0] == "scheduled"
    assert (await status_of(db, own))[0] == "scheduled"


async def test_a_lower_messaging_limit_lowers_the_accounts_never_raises_them(
    db: Database,
) -> None:
    with trio.fail_after(30):
        unset = await make_account(db, business_account_id=WABA)
        lower = await make_account(db, business_account_id=WABA, messaging_limit=100)
        higher = await make_account(db, business_account_id=WABA, messaging_limit=10_000)
        elsewhere = await make_account(db, business_account_id="999")

        def quality(event: str, tier: str) -> QualitySignal:
            return QualitySignal(WABA, event, "15550783881", tier, None, b"{}")

        await account_events.apply_signals(db, [quality("DOWNGRADE", "TIER_250")], now=utc_now())
        after_downgrade = await limits(db, unset, lower, higher, elsewhere)
        await account_events.apply_signals(db, [quality("UPGRADE", "TIER_100K")], now=utc_now())
        after_upgrade = await limits(db, unset, lower, higher, elsewhere)
    assert after_downgrade == [250, 100, 250, None]
    assert after_upgrade == after_downgrade  # raising is the operator's to do


async def limits(db: Database, *accounts: str) -> list[int | None]:
    return [
        await db.fetchval("SELECT messaging_limit FROM accounts WHERE id = $1", a) for a in accounts
    ]


async def test_a_database_failure_keeps_the_signals_and_applies_them_once(
    db: VirtualTimeDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(36_000):
        account = await make_account(db, business_account_id=WABA)
        await make_contacts(db, 3)
        later = utc_now().replace(year=utc_now().year + 1)
        campaign = await template_campaign(
            db, account, schedule_type="scheduled", scheduled_at=later
        )
        failing = FailingDatabase(db)
        async with trio.open_nursery() as nursery:
            broadcaster: Broadcaster = await nursery.start(broadcaster_actor.run)
            async with broadcaster.subscribe() as events:
                applier: WebhookApplier = await nursery.start(
                    webhook_applier.run, failing, broadcaster, WebhookSettings()
                )
                failing.down = True
                assert applier.submit([template_signal("PAUSED")])
                await failing.failed(2)
                assert await events_of_db(db, account) == 0
                failing.down = False
                async for event in events:
                    if isinstance(event, CampaignEvent) and event.name == "campaign:paused":
                        break
                paused_at = await db.fetchval("SELECT paused_at FROM campaigns")
                statistics = applier.statistics()
            nursery.cancel_scope.cancel()
    assert (statistics.queued, statistics.signals_logged, statistics.apply_errors) == (0, 1, 2)
    assert await events_of_db(db, account) == 1
    assert (await status_of(db, campaign))[0] == "paused" and paused_at is not None
