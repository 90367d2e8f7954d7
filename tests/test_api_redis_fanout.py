"""With REDIS_URL, a socket connected to one daemon receives the events of a
campaign run by any daemon (Socket.IO fan-out through Redis)."""

from __future__ import annotations

import uuid
from functools import partial

import pytest
import redis
import trio

from engine.events import CampaignResumed
from engine.messages import CampaignEvent
from engine.store.database import Database
from tests.api_helpers import Harness, api_settings, open_harness
from tests.conftest import REDIS_URL
from tests.fake_gateway import ScriptedGateway
from tests.test_api_socketio import watching

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.mark.skipif(not redis_available(), reason=f"no Redis at {REDIS_URL}")
async def test_events_cross_daemons_through_redis(db: Database) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"  # the Redis channel is shared with other runs
    settings = api_settings(REDIS_URL=REDIS_URL)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first: Harness = await nursery.start(
                partial(open_harness, db, settings, ScriptedGateway(), instance_id="daemon-a")
            )
            second: Harness = await nursery.start(
                partial(open_harness, db, settings, ScriptedGateway(), instance_id="daemon-b")
            )
            async with (
                watching(first, auth={"token": first.token(user)}) as on_first,
                watching(second, auth={"token": second.token(user)}) as on_second,
            ):
                # Each daemon's Redis subscription is up once a probe published by
                # the other daemon comes through.
                for source, watcher in ((second, on_first), (first, on_second)):
                    probe = {"campaignId": f"probe-{uuid.uuid4()}"}
                    while True:
                        source.engine.broadcaster.publish(
                            CampaignEvent(user, CampaignResumed(campaign_id=probe["campaignId"]))
                        )
                        with trio.move_on_after(0.2):
                            if await watcher.next("campaign:resumed") == probe:
                                break

                account = await first.make_account(user=user)
                await first.make_contacts(6, user=user)
                campaign = await first.make_campaign(account, user=user)
                await first.request("POST", f"/api/v1/campaigns/{campaign['id']}/start", user=user)
                for watcher in (on_first, on_second):
                    started = await watcher.next("campaign:started")
                    assert started["campaignId"] == campaign["id"]
                    completed = await watcher.next("campaign:completed")
                    assert completed["campaign"]["stats"]["sent"] == 6
                # Exactly one daemon ran it, and each socket got each event once.
                assert [n for n, _ in on_first.received].count("campaign:started") == 1
                assert [n for n, _ in on_second.received].count("campaign:started") == 1
            nursery.cancel_scope.cancel()
