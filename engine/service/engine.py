"""The engine's Python interface: what the HTTP API, the CLI and tests call.

Commands are committed to PostgreSQL first (the source of truth) and announced
with NOTIFY in the same transaction; the supervisor of whichever daemon owns the
campaign routes them to its actor. So a command works the same whether the
campaign runs in this daemon, in another one, or nowhere yet.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import msgspec
import trio

from engine.actors import broadcaster as broadcaster_actor
from engine.actors import recorder as recorder_actor
from engine.actors import sender_pool as sender_pool_actor
from engine.actors import supervisor as supervisor_actor
from engine.actors import webhook_applier as webhook_applier_actor
from engine.actors.account_budget import (
    AccountBudget,
    AccountRates,
    LocalAccountBudget,
    SharedAccountBudget,
)
from engine.actors.broadcaster import Broadcaster, BroadcasterStatistics
from engine.actors.recorder import Recorder
from engine.actors.sender_pool import SenderPool, SenderPoolStatistics
from engine.actors.supervisor import Supervisor, SupervisorStatistics
from engine.actors.webhook_applier import WebhookApplier, WebhookApplierStatistics
from engine.clock import WallClock
from engine.core import lifecycle
from engine.core.callback_reference import CallbackReferences
from engine.core.campaign_view import campaign_object, processed_count
from engine.core.metrics import CampaignStats
from engine.events import CampaignCancelled, CampaignPaused, CampaignResumed, Event
from engine.gateway import Gateway
from engine.messages import CampaignEvent, CommandKind, WebhookFact
from engine.service.account_events import AccountEvents
from engine.service.accounts import Accounts
from engine.service.campaigns import Campaigns
from engine.service.contacts import Contacts
from engine.service.idempotency import Idempotency
from engine.service.links import Links
from engine.service.monitoring import Monitoring
from engine.service.segments import Segments
from engine.settings import Settings
from engine.store import campaign_runs, campaigns, errors, in_doubt, secrets
from engine.store.database import Database
from engine.store.in_doubt import InDoubtAction
from engine.transport.redis_link import open_redis

log = logging.getLogger(__name__)


class EngineStatistics(msgspec.Struct, frozen=True):
    supervisor: SupervisorStatistics
    sender_pool: SenderPoolStatistics
    broadcaster: BroadcasterStatistics
    webhooks: WebhookApplierStatistics


class Engine:
    def __init__(
        self,
        db: Database,
        clock: WallClock,
        broadcaster: Broadcaster,
        sender_pool: SenderPool,
        supervisor: Supervisor,
        webhooks: WebhookApplier,
        callback_references: CallbackReferences,
        *,
        settings: Settings,
        gateway: Gateway | None = None,
        budgets: AccountBudget | None = None,
    ) -> None:
        self.db = db  # for tests and tools; callers use the resources below
        self.clock = clock
        self.broadcaster = broadcaster
        # Verifies the biz_opaque_callback_data of incoming webhooks.
        self.callback_references = callback_references
        self._sender_pool = sender_pool
        self._supervisor = supervisor
        self._webhooks = webhooks
        # The resources an owner manages, and monitoring (engine/service/*.py).
        self.accounts = Accounts(db, settings.whatsapp)
        self.account_events = AccountEvents(db)
        self.contacts = Contacts(db)
        self.segments = Segments(db)
        # Idempotency-Key of POST requests, shared by every daemon on the database.
        self.idempotency = Idempotency(db)
        self._in_doubt_timeout = settings.delivery.in_doubt_timeout
        self.campaigns = Campaigns(
            db,
            clock,
            self.throttle_changed,
            in_doubt_timeout=self._in_doubt_timeout,
            links_base_url=settings.links.base_url,
            # Test sends (POST /campaigns/:id/test) use the gateway and budgets of the sends.
            gateway=gateway,
            budgets=budgets,
            default_api_url=settings.whatsapp.api_url,
            throttle_slowdown_seconds=settings.sender.throttle_slowdown_seconds,
        )
        # Short links of campaigns with trackLinks (GET /l/<code>).
        self.links = Links(db, clock, broadcaster)
        self.monitoring = Monitoring(db, clock, self.statistics)

    # --- control commands (docs/http-api.md) --------------------------------------------
    # Each returns the campaign object after the change, or raises
    # `errors.NotFound` / `lifecycle.TransitionRefused`.

    async def start(self, campaign_id: str, owner_id: str) -> dict[str, Any]:
        # Refused with `missing_variable` when recipients lack a variable (docs/http-api.md).
        previous, detail = await campaigns.start_campaign(
            self.db, campaign_id, owner_id, now=self.clock.now()
        )
        log.info("campaign %s: start accepted (was %s)", campaign_id, previous)
        return self._shown(detail)

    async def pause(self, campaign_id: str, owner_id: str) -> dict[str, Any]:
        previous = await self._apply(campaign_id, owner_id, "pause")
        campaign = await self.campaign(campaign_id, owner_id)
        if previous != "running":
            # No actor runs it, so nobody else will say it paused.
            self._publish(
                owner_id,
                CampaignPaused(
                    campaign_id=campaign_id,
                    processed_count=_processed(campaign),
                    total_recipients=campaign["total_recipients"],
                    paused_at=campaign["paused_at"],
                    reason=None,
                ),
            )
        return campaign

    async def resume(self, campaign_id: str, owner_id: str) -> dict[str, Any]:
        await self._apply(campaign_id, owner_id, "resume")
        self._publish(owner_id, CampaignResumed(campaign_id=campaign_id))
        return await self.campaign(campaign_id, owner_id)

    async def cancel(self, campaign_id: str, owner_id: str) -> dict[str, Any]:
        previous = await self._apply(campaign_id, owner_id, "cancel")
        campaign = await self.campaign(campaign_id, owner_id)
        if previous != "running":
            self._publish(
                owner_id,
                CampaignCancelled(campaign_id=campaign_id, cancelled_at=campaign["cancelled_at"]),
            )
        return campaign

    async def throttle_changed(self, campaign_id: str) -> None:
        """Call after storing a new throttleConfig: the owning actor applies it live."""
        await campaign_runs.notify(self.db, CommandKind.THROTTLE, campaign_id)

    async def campaign(self, campaign_id: str, owner_id: str) -> dict[str, Any]:
        detail = await campaigns.campaign_detail(self.db, campaign_id, owner_id)
        if detail is None:
            raise errors.NotFound(campaign_id)
        return self._shown(detail)

    def _shown(self, detail: campaigns.CampaignDetail) -> dict[str, Any]:
        shown = campaign_object(
            detail.row,
            in_doubt_timeout=self._in_doubt_timeout,
            variant_counts=detail.variant_counts,  # A/B: one aggregate
        )
        # Messages per pricing category: an aggregate, for one campaign's detail only.
        shown["pricing"] = detail.pricing
        return shown

    async def resolve_in_doubt(
        self, campaign_id: str, owner_id: str, action: InDoubtAction
    ) -> dict[str, Any]:
        """The operator settles the campaign's in-doubt sends now: `fail` them
        (`outcome_unknown`), or `resend` them (the recipient may get the message
        twice). Returns `{id, action, resolved, campaign}`; raises `errors.NotFound`,
        or `lifecycle.TransitionRefused` for `resend` on a finished campaign. The
        campaign's actor, wherever it runs, looks again at once."""
        resolved = await in_doubt.resolve(
            self.db, campaign_id, owner_id, action, now=self.clock.now()
        )
        log.warning(
            "campaign %s: %d in-doubt sends resolved by the operator: %s",
            campaign_id,
            resolved,
            action,
        )
        return {
            "id": campaign_id,
            "action": action,
            "resolved": resolved,
            "campaign": await self.campaign(campaign_id, owner_id),
        }

    # --- webhooks -----------------------------------------------------------------------

    def submit_status_updates(self, updates: Sequence[WebhookFact], *, refused: int = 0) -> bool:
        """Queue webhook facts (and count `refused` ones that could not be used); they
        are applied in batches. Never blocks; False, with nothing queued or counted,
        when the backlog is full (the database is not keeping up)."""
        return self._webhooks.submit(updates, refused=refused)

    # --- monitoring ---------------------------------------------------------------------

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            supervisor=self._supervisor.statistics(),
            sender_pool=self._sender_pool.statistics(),
            broadcaster=self.broadcaster.statistics(),
            webhooks=self._webhooks.statistics(),
        )

    async def _apply(
        self, campaign_id: str, owner_id: str, action: lifecycle.CampaignAction
    ) -> str:
        previous, _row = await campaign_runs.apply_action(
            self.db, campaign_id, owner_id, action, now=self.clock.now()
        )
        log.info("campaign %s: %s accepted (was %s)", campaign_id, action, previous)
        return previous

    def _publish(self, owner_id: str, event: Event) -> None:
        self.broadcaster.publish(CampaignEvent(owner_id, event))


def _processed(campaign: dict[str, Any]) -> int:
    return processed_count(CampaignStats(**campaign["stats"]), campaign["total_recipients"])


@asynccontextmanager
async def open_engine(
    db: Database,
    settings: Settings,
    gateway: Gateway,
    *,
    instance_id: str,
    callback_references: CallbackReferences | None = None,
    clock: WallClock | None = None,
) -> AsyncIterator[Engine]:
    """Run every actor of the engine for the duration of the block.

    `callback_references`: those the gateway issues (by default made from the
    database's key, engine/store/secrets.py).

    On exit the supervisor stops claiming, actors stop dispatching and let the
    requests already written finish (within `server.shutdown_grace_seconds`),
    record them, and release their leases.
    """
    clock = clock or WallClock()
    references = callback_references or CallbackReferences(await secrets.callback_key(db))
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        # One budget per phone number, at its current rate (read and kept fresh here).
        rates = AccountRates(db)
        budgets: AccountBudget = LocalAccountBudget(rates)
        if settings.redis.url:
            # Several daemons share each account's messagesPerSecond through Redis.
            redis = await stack.enter_async_context(open_redis(settings.redis.url))
            budgets = SharedAccountBudget(redis, rates)
        broadcaster: Broadcaster = await nursery.start(broadcaster_actor.run)
        recorder: Recorder = await nursery.start(
            partial(
                recorder_actor.run,
                credits=settings.sender.concurrency,
                linger=settings.engine.record_flush_interval_ms / 1000,
            ),
            db,
            clock,
        )
        sender_pool: SenderPool = await nursery.start(
            partial(sender_pool_actor.run, delivery=settings.delivery),
            gateway,
            settings.sender,
            clock,
            recorder,
            budgets,
        )
        webhooks: WebhookApplier = await nursery.start(
            partial(webhook_applier_actor.run, clock=clock), db, broadcaster, settings.webhooks
        )
        supervisor: Supervisor = await nursery.start(
            supervisor_actor.run,
            db,
            settings,
            clock,
            sender_pool,
            budgets,
            broadcaster,
            instance_id,
        )
        engine = Engine(
            db,
            clock,
            broadcaster,
            sender_pool,
            supervisor,
            webhooks,
            references,
            settings=settings,
            gateway=gateway,
            budgets=budgets,
        )
        # Clicks' counts reach campaign:stats (engine/service/links.py).
        nursery.start_soon(engine.links.announce_clicks)
        try:
            yield engine
        finally:
            with trio.move_on_after(settings.server.shutdown_grace_seconds + 5) as scope:
                scope.shield = True
                await supervisor.shutdown()
            nursery.cancel_scope.cancel()


__all__ = ["Engine", "EngineStatistics", "open_engine"]
