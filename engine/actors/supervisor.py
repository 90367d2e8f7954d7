"""The supervisor: one per daemon. Decides which campaigns run here.

It claims campaigns that are due (a scheduled time reached, or a running
campaign whose owner's lease expired or whose owner is gone), takes their lease,
and starts one campaign actor each, up to `engine.max_running_campaigns`. It
sleeps until the next thing can happen — a NOTIFY from any daemon's command, the
nearest scheduled time or lease expiry, the next lease renewal, and while other
daemons hold leases a look each second for one that died — and never polls busily.

The database may go away at any moment (a restart, a terminated session). The
supervisor never ends for it: a cycle that fails is retried with backoff, lease
renewal included; its LISTEN connection, which is also this daemon's presence
(engine/store/leases.py), is opened again when lost, and since NOTIFYs sent
meanwhile are lost, it then rescans and has every actor re-read its campaign.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import msgspec
import trio

from engine.actors import campaign as campaign_actor
from engine.actors.account_budget import AccountBudget
from engine.actors.broadcaster import Broadcaster
from engine.actors.campaign import CampaignActorStatistics, CampaignHandle
from engine.actors.marker import Marker
from engine.actors.sender_pool import SenderPool
from engine.clock import WallClock
from engine.messages import (
    ActorEnded,
    CampaignCommand,
    CommandKind,
    Notice,
    Recheck,
    Shutdown,
    StopRequested,
    SupervisorMessage,
    ThrottleChanged,
)
from engine.settings import Settings
from engine.store import account_rates, campaign_runs, leases, recipients
from engine.store.campaign_runs import CampaignPlan
from engine.store.database import Database, Listener
from engine.store.errors import DatabaseUnavailable
from engine.store.retrying import OUTAGE, backoff, retrying

log = logging.getLogger(__name__)

_RETRY_SECONDS = 30.0
# An actor that ended because the database went away is started again this soon:
# claiming it again needs the database anyway.
_RETRY_AFTER_OUTAGE_SECONDS = 1.0
# Re-listening is what makes this daemon present again: retry it often.
_LISTEN_MAX_DELAY_SECONDS = 1.0
# Shielded clean-ups on the way out (a lease release, the listener's connection)
# wait this long at most: what they leave undone expires or is reclaimed anyway.
_CLEANUP_SECONDS = 5.0


@contextmanager
def _cleanup() -> Iterator[None]:
    """A shielded clean-up on the way out, bounded, that an outage may leave undone."""
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(_CLEANUP_SECONDS),
        suppress(DatabaseUnavailable),
    ):
        yield


# Commands for the campaign's actor; start and resume only make the loop claim.
_ROUTED: dict[CommandKind, CampaignCommand] = {
    CommandKind.PAUSE: StopRequested(),
    CommandKind.CANCEL: StopRequested(),
    CommandKind.THROTTLE: ThrottleChanged(),
    CommandKind.RECHECK: Recheck(),
}


class SupervisorStatistics(msgspec.Struct, frozen=True):
    instance_id: str
    running: tuple[CampaignActorStatistics, ...]
    started: int
    taken_over: int
    crashed: int


class Supervisor:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: WallClock,
        pool: SenderPool,
        budgets: AccountBudget,
        broadcaster: Broadcaster,
        instance_id: str,
        inbox: trio.MemorySendChannel[SupervisorMessage],
        marker: Marker | None = None,
    ) -> None:
        self._db = db
        # One per daemon: the groups of all its campaigns, marked together.
        self._marker = marker or Marker(db, lease_owner=instance_id)
        self._settings = settings
        self._clock = clock
        self._pool = pool
        self._budgets = budgets
        self._broadcaster = broadcaster
        self.instance_id = instance_id
        self._inbox = inbox
        self._actors: dict[str, CampaignHandle] = {}
        self._stopping = False
        self._all_ended = trio.Event()
        self._all_ended.set()
        self._started = 0
        self._taken_over = 0
        self._crashed = 0
        # Campaigns whose actor crashed wait this long before being claimed again.
        self._retry_after: dict[str, float] = {}

    def notice(self, message: SupervisorMessage) -> None:
        try:
            self._inbox.send_nowait(message)
        except trio.WouldBlock:
            log.warning("supervisor inbox full; %r dropped (the next rescan catches up)", message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def account_changed(self, phone_number_id: str) -> None:
        """An account row of this number changed (messagesPerSecond): budgets re-read it."""
        self._budgets.account_changed(phone_number_id)

    async def shutdown(self) -> None:
        """Stop claiming; actors stop dispatching, finish what is in flight and end."""
        self._stopping = True
        for handle in list(self._actors.values()):
            handle.tell(Shutdown())
        self.notice(ActorEnded(""))  # wake the loop so it sees `_stopping`
        await self._all_ended.wait()

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            instance_id=self.instance_id,
            running=tuple(h.statistics() for h in self._actors.values()),
            started=self._started,
            taken_over=self._taken_over,
            crashed=self._crashed,
        )

    # --- the loop -----------------------------------------------------------------------

    async def serve(
        self, inbox: trio.MemoryReceiveChannel[SupervisorMessage], actors: trio.Nursery
    ) -> None:
        ttl = self._settings.engine.lease_ttl_seconds
        next_renewal = trio.current_time() + ttl / 3
        failures = 0
        while not self._stopping:
            try:
                await leases.note_missing_daemons(self._db)
                await self._claim(actors)
                if trio.current_time() >= next_renewal:
                    await self._renew_leases()
                    next_renewal = trio.current_time() + ttl / 3
                deadline = await self._next_deadline(next_renewal)
            except DatabaseUnavailable as error:
                # Nothing of this cycle needs undoing: a lease taken without an
                # actor is ours and is claimed again; renewal is retried first.
                failures += 1
                OUTAGE.failed("claiming campaigns and renewing leases", error)
                deadline = trio.current_time() + backoff(failures)
            else:
                if failures:
                    OUTAGE.succeeded()
                failures = 0
            with trio.move_on_at(deadline):
                self._handle(await inbox.receive())
                while True:  # take everything already queued before claiming again
                    try:
                        self._handle(inbox.receive_nowait())
                    except trio.WouldBlock:
                        break

    async def _next_deadline(self, next_renewal: float) -> float:
        deadline = min([next_renewal, *self._retry_after.values()])
        wake = await leases.next_wake_up(self._db, now=self._clock.now(), owner=self.instance_id)
        now = trio.current_time()
        if wake.next_scheduled_at is not None:
            deadline = min(deadline, self._clock.trio_time_at(wake.next_scheduled_at))
        if wake.seconds_to_lease_event is not None:
            # Lease times are the database's: wait their distance, whatever our clock says.
            deadline = min(deadline, now + wake.seconds_to_lease_event)
        if wake.others_hold_leases:
            deadline = min(deadline, now + leases.PRESENCE_POLL_SECONDS)
        return deadline

    def resync(self) -> None:
        """After NOTIFYs may have been missed: every actor re-reads its campaign's
        status, throttle and recipients, and the loop claims again."""
        for handle in list(self._actors.values()):
            for command in (StopRequested(), ThrottleChanged(), Recheck()):
                handle.tell(command)
        self.notice(ActorEnded(""))

    def _handle(self, message: SupervisorMessage) -> None:
        match message:
            case Notice(kind=kind, campaign_id=campaign_id):
                command = _ROUTED.get(kind)
                handle = self._actors.get(campaign_id)
                if command is not None and handle is not None:
                    handle.tell(command)
                # start / resume: the loop claims after every message
            case ActorEnded():
                pass

    async def _claim(self, actors: trio.Nursery) -> None:
        free = self._settings.engine.max_running_campaigns - len(self._actors)
        if free <= 0 or self._stopping:
            return
        now = self._clock.now()
        moment = trio.current_time()
        self._retry_after = {k: t for k, t in self._retry_after.items() if t > moment}
        candidates = await leases.claimable_campaigns(
            self._db,
            now=now,
            owner=self.instance_id,
            limit=free,
            exclude=[*self._actors, *self._retry_after],
        )
        for campaign_id in candidates:
            if not await leases.try_acquire_lease(
                self._db,
                campaign_id,
                owner=self.instance_id,
                ttl=self._settings.engine.lease_ttl_seconds,
            ):
                continue  # another daemon was quicker
            plan = await campaign_runs.load_plan(self._db, campaign_id)
            if plan is None or not await self._prepare(plan):
                await leases.release_lease(self._db, campaign_id, owner=self.instance_id)
                continue
            self._all_ended = trio.Event() if not self._actors else self._all_ended
            try:
                handle: CampaignHandle = await actors.start(self._run_actor, plan)
            except RuntimeError:
                continue  # it crashed before it was ready; logged, retried later
            self._actors[campaign_id] = handle
            self._started += 1

    async def _prepare(self, plan: CampaignPlan) -> bool:
        if plan.status == "running":
            # Its previous owner died: what it had marked `sending` may or may
            # not have been sent. Those rows wait for a webhook or the timeout.
            in_doubt = await recipients.mark_abandoned_in_doubt(self._db, plan.id)
            self._taken_over += 1
            log.warning(
                "campaign %s: taken over from a stopped daemon; %d sends in doubt",
                plan.id,
                in_doubt,
            )
        return await campaign_runs.begin_running(self._db, plan.id, now=self._clock.now())

    async def _run_actor(
        self, plan: CampaignPlan, *, task_status: trio.TaskStatus[CampaignHandle]
    ) -> None:
        try:
            await campaign_actor.run(
                msgspec.structs.replace(plan, status="running"),
                db=self._db,
                settings=self._settings,
                clock=self._clock,
                pool=self._pool,
                budgets=self._budgets,
                broadcaster=self._broadcaster,
                lease_owner=self.instance_id,
                marker=self._marker,
                task_status=task_status,
            )
        except Exception as error:
            # One campaign's unexpected failure must not stop every other
            # campaign of this daemon. It stays `running`; it is retried later.
            delay = _RETRY_AFTER_OUTAGE_SECONDS if _is_outage(error) else _RETRY_SECONDS
            log.exception("campaign %s: actor crashed; retrying in %.0f s", plan.id, delay)
            self._crashed += 1
            self._retry_after[plan.id] = trio.current_time() + delay
        finally:
            self._actors.pop(plan.id, None)
            with _cleanup():
                # Unreleased, it stays ours: we claim it again, or it expires.
                await leases.release_lease(self._db, plan.id, owner=self.instance_id)
            if not self._actors:
                self._all_ended.set()
            self.notice(ActorEnded(plan.id))

    async def _renew_leases(self) -> None:
        if not self._actors:
            return
        held = await leases.renew_leases(
            self._db,
            list(self._actors),
            owner=self.instance_id,
            ttl=self._settings.engine.lease_ttl_seconds,
        )
        for campaign_id, handle in list(self._actors.items()):
            if campaign_id not in held:
                log.error("campaign %s: lease lost; stopping here", campaign_id)
                handle.tell(Shutdown())


def _is_outage(error: Exception) -> bool:
    if isinstance(error, DatabaseUnavailable):
        return True
    return isinstance(error, ExceptionGroup) and error.subgroup(DatabaseUnavailable) is not None


def _parse_notice(payload: str) -> Notice | None:
    kind, _, campaign_id = payload.partition(":")
    if kind not in CommandKind.__members__.values() or not campaign_id:
        return None
    return Notice(CommandKind(kind), campaign_id)


async def run(
    db: Database,
    settings: Settings,
    clock: WallClock,
    pool: SenderPool,
    budgets: AccountBudget,
    broadcaster: Broadcaster,
    instance_id: str,
    *,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    send, receive = trio.open_memory_channel[SupervisorMessage](1000)
    supervisor = Supervisor(db, settings, clock, pool, budgets, broadcaster, instance_id, send)

    def on_notify(payload: str) -> None:
        notice = _parse_notice(payload)
        if notice is not None:
            supervisor.notice(notice)

    channels = {
        campaign_runs.COMMAND_CHANNEL: on_notify,
        account_rates.ACCOUNT_CHANNEL: supervisor.account_changed,
    }
    async with send, receive, trio.open_nursery() as listening:
        await listening.start(_keep_listening, db, channels, supervisor)
        async with trio.open_nursery() as actors:
            task_status.started(supervisor)
            await supervisor.serve(receive, actors)
            await supervisor._all_ended.wait()
        listening.cancel_scope.cancel()


async def _keep_listening(
    db: Database,
    channels: dict[str, Callable[[str], None]],
    supervisor: Supervisor,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """LISTEN, and register that session as this daemon's presence; again each time
    the connection is lost. Started once the first listener is in place."""
    first = True
    while True:
        listener: Listener = await retrying(
            "listening for commands", db.listen, channels, max_delay=_LISTEN_MAX_DELAY_SECONDS
        )
        try:
            await retrying(
                "registering this daemon's presence",
                leases.register_presence,
                db,
                supervisor.instance_id,
                backend_pid=listener.backend_pid,
                backend_start=listener.backend_start,
                max_delay=_LISTEN_MAX_DELAY_SECONDS,
            )
            if first:
                first = False
                task_status.started()
            else:
                log.warning("listening again after the connection was lost; rescanning")
                supervisor.resync()
            await listener.lost.wait()
            log.warning("the LISTEN connection was lost; NOTIFYs are missed until it is back")
        finally:
            with _cleanup():
                await listener.stop()
