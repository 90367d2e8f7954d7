"""The webhook applier's backlog bound."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.actors.webhook_applier import WebhookApplier
from engine.messages import StatusUpdate


def facts(count: int) -> list[StatusUpdate]:
    return [StatusUpdate(i, None, "delivered", datetime.now(UTC)) for i in range(count)]


def test_a_full_backlog_refuses_the_whole_batch_and_queues_nothing() -> None:
    applier = WebhookApplier(max_queued=5)
    assert applier.submit(facts(3))
    assert not applier.submit(facts(3))
    assert applier.statistics().queued == 3
    assert applier.submit(facts(2))
    assert applier.statistics().queued == 5
