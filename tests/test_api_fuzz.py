"""Seeded fuzzing of every route that takes a body, over a real socket.

Each request is a valid body with one value replaced by something hostile (deep
nesting, out-of-range numbers, NUL bytes, lone surrogates and odd Unicode, wrong
types, huge strings), or a hostile body altogether (empty, not JSON, truncated).
Whatever comes in: never a 5xx, always the contract's envelope, nothing written by
a request that was refused, and the daemon healthy at the end.

The generator is seeded (SEED), so a failure replays; the message names the case.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import trio

from engine.store.database import Database
from tests.api_helpers import APP_SECRET, Harness, Reply, api, gateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

SEED = 20_251_201
REQUESTS = 480
MARKER = "@@fuzz@@"


def _deep(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + b"1" + closer * depth


_HOSTILE_VALUES: list[bytes] = [
    # numbers out of every range
    b"1e400",
    b"-1e400",
    b"1e308",
    str(2**70).encode(),
    str(-(2**70)).encode(),
    b"123456789012345678901234567890.5",
    b"-0",
    b"NaN",
    b"Infinity",
    # strings PostgreSQL cannot store, or JSON cannot carry
    b'"a\\u0000b"',
    b'"\\u0000"',
    b'"\\ud800"',
    b'"x\\udfff"',
    b'"\xed\xa0\x80"',  # a surrogate encoded as UTF-8: not valid UTF-8
    b'"\xff\xfe"',
    '"\u202e\u0301\U0001f600\uffff\ufeff\u00a0"'.encode(),
    b'"' + b"x" * 100_000 + b'"',
    b'""',
    b'"   "',
    # wrong types
    b"null",
    b"true",
    b"0",
    b"-1",
    b"[]",
    b"{}",
    b'[1, "a", null]',
    b'{"a": {"b": [1]}}',
    b'"not-a-uuid"',
    # dates at and beyond the edges
    b'"2025-13-45T99:99:99Z"',
    b'"0001-01-01T00:00:00+14:00"',
    b'"9999-12-31T23:59:59-14:00"',
    # nesting
    _deep(33),
    _deep(200),
    _deep(5_000),
    b'{"a":' * 40 + b"1" + b"}" * 40,
]

_HOSTILE_BODIES: list[bytes] = [
    b"",
    b"   ",
    b"null",
    b"[]",
    b"{}",
    b"\x00",
    b"{",
    b'{"name":',
    b"not json",
    b"{'name': 'single quotes'}",
    b'"\\ud800"',
    _deep(100_000),
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


def hostile_body(rng: random.Random, valid: Any) -> tuple[bytes, str]:
    """A body derived from `valid`, and what was done to it (for the failure message)."""
    roll = rng.random()
    if roll < 0.15:
        body = rng.choice(_HOSTILE_BODIES)
        return body, f"body {body[:40]!r}"
    if roll < 0.22:
        encoded = msgspec.json.encode(valid)
        cut = rng.randrange(len(encoded))
        return encoded[:cut], f"truncated at {cut}"
    if roll < 0.27 and isinstance(valid, dict):
        return msgspec.json.encode(valid | {"unknownField": 1}), "unknown field"
    paths = _paths(valid) or [()]
    path = rng.choice(paths)
    raw = rng.choice(_HOSTILE_VALUES)
    encoded = msgspec.json.encode(_replaced(valid, path, MARKER))
    return encoded.replace(f'"{MARKER}"'.encode(), raw), f"{path} = {raw[:40]!r}"


async def stored_state(db: Database) -> tuple[Any, ...]:
    """Row counts, and the content of what no background task changes."""
    row = await db.fetchrow(
        """SELECT
               (SELECT count(*) FROM campaigns) AS campaigns,
               (SELECT count(*) FROM campaign_recipients) AS recipients,
               (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM accounts t),
               (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM contacts t),
               (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM segments t)
        """
    )
    assert row is not None
    return tuple(row.values())


def check_envelope(reply: Reply, case: str) -> None:
    assert reply.status < 500, (case, reply.status, reply.body[:300])
    body = msgspec.json.decode(reply.body)
    assert isinstance(body, dict), case
    if reply.status >= 400:
        assert body["success"] is False, case
        assert isinstance(body["message"], str) and body["message"], case
        code = body["error"]["code"]
        assert isinstance(code, str) and code == code.lower() and " " not in code, case
        assert isinstance(body["error"].get("field", ""), str), case
    else:
        assert body["success"] is True, case


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}"}


async def test_hostile_bodies_never_break_the_api(api: Harness) -> None:
    with trio.fail_after(120):
        rng = random.Random(SEED)
        account = await api.make_account()
        await api.make_contacts(3)
        contact = (await api.request("GET", "/api/v1/contacts")).data[0]["id"]
        draft = (await api.make_campaign(account))["id"]
        controlled = (await api.make_campaign(account))["id"]
        webhook = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "metadata": {"phone_number_id": "PN1"},
                                "statuses": [
                                    {
                                        "id": "wamid.1",
                                        "status": "delivered",
                                        "timestamp": "1700000000",
                                        "recipient_id": "15550000000",
                                        "biz_opaque_callback_data": "1",
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
        template = {
            "accountId": account,
            "name": "Fuzz",
            "messageType": "template",
            "messageContent": {
                "name": "t",
                "language": "en",
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            },
            "audienceType": "tags",
            "audienceConfig": {"tags": ["vip"]},
            "scheduleType": "scheduled",
            "scheduledAt": "2099-01-01T00:00:00Z",
            "throttleConfig": {"messagesPerMinute": 60, "batchSize": 10, "delayBetweenBatches": 0},
            "templateVariables": {"firstName": "friend"},
        }
        Headers = Callable[[bytes], dict[str, str]]
        no_headers: Headers = lambda _body: {}  # noqa: E731
        routes: list[tuple[str, str, Any, Headers]] = [
            (
                "POST",
                "/api/v1/accounts",
                {
                    "name": "A",
                    "phoneNumberId": "PN2",
                    "accessToken": "t",
                    "apiUrl": api.settings.whatsapp.api_url,
                    "status": "connected",
                    "messagesPerSecond": 80,
                },
                no_headers,
            ),
            (
                "PATCH",
                f"/api/v1/accounts/{account}",
                {"name": "B", "status": "connected"},
                no_headers,
            ),
            (
                "POST",
                "/api/v1/contacts",
                {
                    "contacts": [
                        {
                            "phone": "+14155550100",
                            "firstName": "F",
                            "lastName": "L",
                            "email": "e@example.com",
                            "company": "C",
                            "tags": ["vip"],
                            "attributes": {"city": "Oslo"},
                            "optedOut": False,
                        }
                    ]
                },
                no_headers,
            ),
            (
                "POST",
                "/api/v1/contacts",
                {"phone": "+14155550101", "attributes": {"k": "v"}, "tags": ["a"]},
                no_headers,
            ),
            (
                "PATCH",
                f"/api/v1/contacts/{contact}",
                {"firstName": "G", "tags": ["b"], "attributes": {"x": "y"}},
                no_headers,
            ),
            (
                "POST",
                "/api/v1/segments",
                {"name": "S", "filter": {"tags": ["vip"], "contactIds": [contact]}},
                no_headers,
            ),
            ("POST", "/api/v1/campaigns", template, no_headers),
            (
                "POST",
                "/api/v1/campaigns",
                template | {"messageType": "text", "messageContent": "Hi {{firstName}}"},
                no_headers,
            ),
            ("PATCH", f"/api/v1/campaigns/{draft}", template, no_headers),
            *(
                ("POST", f"/api/v1/campaigns/{controlled}/{action}", {"reason": "x"}, no_headers)
                for action in ("start", "pause", "resume", "duplicate", "cancel")
            ),
            ("POST", "/webhooks/whatsapp", webhook, signed),
            ("POST", "/webhooks/whatsapp", webhook, no_headers),
        ]
        statuses: dict[int, int] = {}
        for n in range(REQUESTS):
            method, path, valid, headers = routes[n % len(routes)]
            body, what = hostile_body(rng, valid)
            case = f"#{n} {method} {path}: {what}"
            before = await stored_state(api.db)
            reply = await api.request(method, path, body=body, headers=headers(body))
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            check_envelope(reply, case)
            if path.startswith("/webhooks") and not headers(body):
                assert reply.status == 401, case
            if reply.status >= 400:
                assert await stored_state(api.db) == before, case
        assert any(400 <= s < 500 for s in statuses) and any(s < 300 for s in statuses), statuses
        health = await api.request("GET", "/healthz", user=None)
        assert (health.status, health.json()) == (200, {"status": "ok"})
        assert (await api.request("GET", "/api/v1/accounts")).status == 200
