"""The marker: marks the due groups of every campaign of this daemon together.

A campaign sending 30 a minute has a group of one row every two seconds; a
thousand of them marking alone made a thousand statements and crossings a
second, queued on the pool ahead of everything else. Instead each dispatcher
hands its group to the marker and waits: what arrives while statements run
is marked by the next one, for all campaigns together
(`recipients.mark_sending_groups`), and each group gets back its own rows.
The campaign checks stay per campaign, in that statement: a group of a
campaign paused, cancelled or no longer ours marks nothing, and the others'
rows are marked all the same (docs/delivery-guarantees.md).

No task of its own: a caller that finds no statement on the wire runs the next
one for everything queued, the others wait for theirs. Beside statements on the
wire another starts only for `_ROWS_TO_OVERLAP` rows or more (up to
`_IN_FLIGHT` overlapped; a mark is a durable commit): a lone group is marked at
once, as it was when each campaign marked its own, a fast campaign's groups
overlap, and a thousand slow campaigns' one-row groups share the next statement
instead of making one each. A call, once made, is not cancellable (rows
marked must be handed over); it waits at most for the statements on the wire
and its own (and its group's own statement, see below), each bounded by the
database's operation timeout.

A campaign row held by another transaction (a pause being committed, an edit)
is not waited for in that statement: its group is then marked alone by its
caller, which waits for that transaction as a single campaign's mark always
did, while the other campaigns go on. Likewise a statement that fails for
another reason than an outage is not the fault of every campaign in it: each
group is then marked alone, so each gets its own rows or its own error.
"""

from __future__ import annotations

import logging
from datetime import datetime

import trio

from engine.store import recipients
from engine.store.database import Database
from engine.store.errors import DatabaseUnavailable
from engine.store.recipients import MarkGroup

log = logging.getLogger(__name__)

# Statements on the wire at once (each on its own connection of the pool).
_IN_FLIGHT = 3
# Rows queued that start a statement beside one on the wire. At 1,000 campaigns
# sending 30 a minute, one-row groups overlapping made ~330 statements a second for
# 500 messages (benchmarks/README.md): a lone row now waits for the next statement,
# while two or more (a fast campaign's groups are ~10 rows) still overlap.
_ROWS_TO_OVERLAP = 2


class _Request:
    def __init__(self, group: MarkGroup) -> None:
        self.group = group
        self.marked: list[int] | None = None
        self.error: BaseException | None = None
        self.alone = False  # to be marked by its own statement, by its caller
        self.done = False


class Marker:
    """Shared by every dispatcher of one daemon (one lease owner)."""

    def __init__(self, db: Database, *, lease_owner: str) -> None:
        self._db = db
        self.lease_owner = lease_owner
        self._queue: list[_Request] = []
        self._queued_rows = 0
        self._in_flight = 0
        self._changed = trio.Event()  # a statement ended
        self.statements = 0  # for monitoring and tests
        self.groups = 0

    async def mark(self, campaign_id: str, ids: list[int], *, now: datetime) -> list[int]:
        """Mark the group `sending` (see `recipients.mark_sending`); only the ids
        returned may be sent. Raises DatabaseUnavailable when nothing was marked
        because the database could not be reached, or the group's own error."""
        request = _Request(MarkGroup(campaign_id, ids, now))
        self._queue.append(request)
        self._queued_rows += len(ids)
        with trio.CancelScope(shield=True):
            while not request.done:
                if self._may_lead():
                    await self._lead()
                else:
                    await self._changed.wait()
            if request.alone:
                # Waits for whatever holds its campaign, without holding up the others.
                self.statements += 1
                return await recipients.mark_sending(
                    self._db, campaign_id, ids, lease_owner=self.lease_owner, now=now
                )
        if request.error is not None:
            raise request.error
        assert request.marked is not None
        return request.marked

    def _may_lead(self) -> bool:
        if not self._queue:
            return False
        if self._in_flight == 0:
            return True
        return self._in_flight < _IN_FLIGHT and self._queued_rows >= _ROWS_TO_OVERLAP

    async def _lead(self) -> None:
        """Run one statement for everything queued (nothing if another leader
        took it meanwhile)."""
        self._in_flight += 1
        try:
            # Groups of the campaigns woken at this same moment join this statement.
            await trio.lowlevel.cancel_shielded_checkpoint()
            batch, self._queue, self._queued_rows = self._queue, [], 0
            if not batch:
                return
            try:
                await self._run(batch)
            except BaseException as error:
                for request in batch:
                    if not request.done:  # never left waiting for ever
                        request.error, request.done = error, True
                raise
        finally:
            self._in_flight -= 1
            self._changed.set()
            self._changed = trio.Event()

    async def _run(self, batch: list[_Request]) -> None:
        self.statements += 1
        self.groups += len(batch)
        try:
            result = await recipients.mark_sending_groups(
                self._db, [r.group for r in batch], lease_owner=self.lease_owner
            )
        except DatabaseUnavailable as error:
            # Nothing was marked: every group's rows are still pending.
            for request in batch:
                request.error, request.done = DatabaseUnavailable(str(error)), True
            return
        except Exception as error:
            if len(batch) == 1:
                batch[0].error, batch[0].done = error, True
                return
            # Nothing was marked; each group alone gets its own rows or its own error.
            log.warning(
                "marking %d groups in one statement failed (%s: %s); marking each alone",
                len(batch),
                type(error).__name__,
                error,
            )
            for request in batch:
                request.alone, request.done = True, True
            return
        for request, ids in zip(batch, result.marked, strict=True):
            request.alone = request.group.campaign_id in result.busy
            request.marked, request.done = ids, True
