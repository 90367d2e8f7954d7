"""Idempotency-Key on POST requests under /api/v1 (docs/http-api.md, "Idempotency")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
import trio

from engine.service.idempotency import (
    Claimed,
    Idempotency,
    InProgress,
    Replay,
    fingerprint,
)
from engine.store import idempotency as stored_keys
from engine.store.database import Database, open_database
from tests.api_helpers import (
    OTHER_USER,
    USER,
    Harness,
    Reply,
    api,
    api_settings,
    gateway,
    open_harness,
)
from tests.fake_gateway import ScriptedGateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

ACCOUNT = {"name": "Main", "phoneNumberId": "PN1", "accessToken": "tok-123"}


def keyed(key: str) -> Mapping[str, str]:
    return {"Idempotency-Key": key}


async def count(db: Database, table: str, owner_id: str = USER) -> int:
    value: int = await db.fetchval(f"SELECT count(*) FROM {table} WHERE owner_id = $1", owner_id)
    return value


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    body: dict[str, Any] = reply.json()
    assert body["success"] is False and body["message"].startswith("Idempotency-Key")
    assert body["error"] == {"code": code, "field": "Idempotency-Key"}


async def test_a_repeat_replays_the_first_answer_and_creates_nothing_twice(api: Harness) -> None:
    with trio.fail_after(30):
        account_id = await api.make_account()
        campaign = {
            "accountId": account_id,
            "name": "Launch",
            "messageType": "text",
            "messageContent": "Hi",
            "audienceType": "all",
            "audienceConfig": {},
            "scheduleType": "manual",
        }
        first = await api.request("POST", "/api/v1/campaigns", campaign, headers=keyed("k-1"))
        again = await api.request("POST", "/api/v1/campaigns", campaign, headers=keyed("k-1"))
        assert first.status == 201, first.body
        assert (again.status, again.body) == (first.status, first.body)
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert await count(api.db, "campaigns") == 1
        # Without a key, nothing is replayed.
        plain = await api.request("POST", "/api/v1/campaigns", campaign)
        assert plain.status == 201 and plain.data["id"] != first.data["id"]
        assert await count(api.db, "campaigns") == 2


async def test_the_same_key_with_another_request_is_refused(api: Harness) -> None:
    with trio.fail_after(30):
        first = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("k"))
        assert first.status == 201, first.body
        other_body = ACCOUNT | {"name": "Second"}
        assert_error(
            await api.request("POST", "/api/v1/accounts", other_body, headers=keyed("k")),
            409,
            "idempotency_key_reused",
        )
        # Another path with the same key and body is another request too.
        assert_error(
            await api.request("POST", "/api/v1/segments", ACCOUNT, headers=keyed("k")),
            409,
            "idempotency_key_reused",
        )
        assert await count(api.db, "accounts") == 1
        assert await count(api.db, "segments") == 0


async def test_keys_are_scoped_per_user(api: Harness) -> None:
    with trio.fail_after(30):
        mine = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("shared"))
        theirs = await api.request(
            "POST", "/api/v1/accounts", ACCOUNT, user=OTHER_USER, headers=keyed("shared")
        )
        assert (mine.status, theirs.status) == (201, 201)
        assert mine.data["id"] != theirs.data["id"]
        assert "idempotent-replayed" not in theirs.headers
        assert await count(api.db, "accounts", OTHER_USER) == 1


async def test_an_empty_or_over_long_key_is_a_400_naming_the_header(api: Harness) -> None:
    with trio.fail_after(30):
        for key in ("", "k" * 256):
            reply = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed(key))
            assert reply.status == 400, reply.body
            assert reply.json()["error"] == {
                "code": "validation_failed",
                "field": "Idempotency-Key",
            }
            assert reply.json()["message"] == "Idempotency-Key: must be 1 to 255 characters"
        assert await count(api.db, "accounts") == 0
        assert await api.db.fetchval("SELECT count(*) FROM idempotency_keys") == 0
        longest = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("k" * 255))
        assert longest.status == 201, longest.body


async def test_refusals_are_replayed_too(api: Harness) -> None:
    with trio.fail_after(30):
        bad = {"name": "Main"}
        first = await api.request("POST", "/api/v1/accounts", bad, headers=keyed("bad"))
        assert first.status == 400, first.body
        # Fixing the body under the same key is another request, not a retry.
        assert_error(
            await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("bad")),
            409,
            "idempotency_key_reused",
        )
        again = await api.request("POST", "/api/v1/accounts", bad, headers=keyed("bad"))
        assert (again.status, again.body) == (400, first.body)
        assert again.headers["idempotent-replayed"] == "true"


async def test_a_key_expires_after_24_hours_and_old_keys_are_purged(api: Harness) -> None:
    with trio.fail_after(30):
        first = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("day"))
        await api.db.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '23 hours 59 minutes'"
        )
        replay = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("day"))
        assert replay.body == first.body
        # Long-expired keys of anyone, more than one claim purges.
        await api.db.execute(
            """INSERT INTO idempotency_keys (owner_id, key, fingerprint, claim_token, created_at)
                SELECT 'old-user', 'old-' || i, '\\x00', gen_random_uuid(),
                       now() - interval '3 days'
                FROM generate_series(1, $1) i""",
            stored_keys.PURGE_LIMIT + 5,
        )
        await api.db.execute(
            "UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 minute'"
            " WHERE owner_id = $1",
            USER,
        )
        fresh = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("day"))
        assert fresh.status == 201 and "idempotent-replayed" not in fresh.headers
        assert fresh.data["id"] != first.data["id"]
        assert await count(api.db, "accounts") == 2
        # The claim purged one batch of the oldest; the rest wait for later claims.
        assert await count(api.db, "idempotency_keys", "old-user") == 5


async def test_a_request_still_in_progress_answers_409(api: Harness) -> None:
    with trio.fail_after(30):
        held = await api.engine.idempotency.begin(
            USER, "busy", fingerprint("POST", "/api/v1/accounts", msgspec.json.encode(ACCOUNT))
        )
        assert isinstance(held, Claimed)
        busy = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("busy"))
        assert_error(busy, 409, "idempotency_key_in_progress")
        assert busy.headers["retry-after"] == "1"
        assert await count(api.db, "accounts") == 0
        # A claim unfinished for over a minute is abandoned (its daemon died): a
        # retry takes it over, and the old holder can no longer finish it.
        await api.db.execute("UPDATE idempotency_keys SET created_at = now() - interval '61 s'")
        taken = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("busy"))
        assert taken.status == 201, taken.body
        await api.engine.idempotency.finish(
            USER, "busy", held, status=418, content_type="text/plain", body=b"late"
        )
        replay = await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("busy"))
        assert (replay.status, replay.body) == (201, taken.body)


async def test_a_released_claim_lets_the_retry_run_again(db: Database) -> None:
    # What the API does with a 5xx answer: nothing is stored, the retry runs.
    with trio.fail_after(30):
        keys = Idempotency(db)
        request = fingerprint("POST", "/api/v1/x", b"{}")
        claim = await keys.begin(USER, "k", request)
        assert isinstance(claim, Claimed)
        assert isinstance(await keys.begin(USER, "k", request), InProgress)
        await keys.release(USER, "k", claim)
        again = await keys.begin(USER, "k", request)
        assert isinstance(again, Claimed)
        await keys.finish(USER, "k", again, status=201, content_type=None, body=b"done")
        assert await keys.begin(USER, "k", request) == Replay(201, None, b"done")


async def test_two_daemons_on_one_database_share_keys(
    db: Database, database_url: str, gateway: ScriptedGateway
) -> None:
    settings = api_settings()
    with trio.fail_after(60):
        async with (
            open_database(database_url, min_size=1, max_size=4) as other_db,
            trio.open_nursery() as nursery,
        ):
            a: Harness = await nursery.start(
                lambda task_status: open_harness(
                    db, settings, gateway, instance_id="daemon-a", task_status=task_status
                )
            )
            b: Harness = await nursery.start(
                lambda task_status: open_harness(
                    other_db,
                    settings,
                    ScriptedGateway(),
                    instance_id="daemon-b",
                    task_status=task_status,
                )
            )
            first = await a.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("both"))
            again = await b.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("both"))
            assert first.status == 201
            assert (again.status, again.body) == (201, first.body)
            assert again.headers["idempotent-replayed"] == "true"
            assert_error(
                await b.request(
                    "POST", "/api/v1/accounts", ACCOUNT | {"name": "B"}, headers=keyed("both")
                ),
                409,
                "idempotency_key_reused",
            )
            assert await count(db, "accounts") == 1
            nursery.cancel_scope.cancel()


async def test_concurrent_requests_with_one_key_create_one_resource(api: Harness) -> None:
    replies: list[Reply] = []

    async def send() -> None:
        replies.append(
            await api.request("POST", "/api/v1/accounts", ACCOUNT, headers=keyed("race"))
        )

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(send)
        assert await count(api.db, "accounts") == 1
        created = [r for r in replies if r.status == 201]
        assert created, [r.body for r in replies]
        assert {r.body for r in created} == {created[0].body}
        for reply in replies:
            if reply.status != 201:
                assert_error(reply, 409, "idempotency_key_in_progress")


async def test_openapi_lists_the_header_on_post_operations(api: Harness) -> None:
    with trio.fail_after(30):
        document = (await api.request("GET", "/openapi.json", user=None)).json()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                names = {p["name"] for p in operation.get("parameters", [])}
                expected = method == "post" and path.startswith("/api/v1/")
                assert ("Idempotency-Key" in names) == expected, (method, path)
