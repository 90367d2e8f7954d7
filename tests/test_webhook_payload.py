"""The pure side of webhooks: callback references, signatures, and the parser that
refuses, one fact at a time, what could not be stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from engine.core.callback_reference import CallbackReferences
from engine.core.webhook_payload import (
    MalformedPayload,
    parse_notification,
    sign,
    signature_valid,
)
from engine.messages import Pricing

REFERENCES = CallbackReferences(b"k" * 32)
T0 = 1_760_000_000


def body(statuses: list[Any], messages: list[Any] | None = None, **value: Any) -> bytes:
    value = {"metadata": {"phone_number_id": "PN1"}, "statuses": statuses} | value
    if messages is not None:
        value["messages"] = messages
    return msgspec.json.encode(
        {
            "object": "whatsapp_business_account",
            "entry": [{"changes": [{"field": "messages", "value": value}]}],
        }
    )


def status(wamid: str = "wamid.1", kind: str = "delivered", **extra: Any) -> dict[str, Any]:
    return {"id": wamid, "status": kind, "timestamp": str(T0), "recipient_id": "1555"} | extra


# --- references -------------------------------------------------------------------------


def test_a_reference_names_its_recipient_only_under_its_own_key() -> None:
    reference = REFERENCES.issue(42)
    assert reference.startswith("42.") and len(reference) > 20
    assert REFERENCES.recipient_id(reference) == 42
    other_deployment = CallbackReferences(b"o" * 32)
    assert other_deployment.recipient_id(reference) is None
    assert REFERENCES.recipient_id(other_deployment.issue(42)) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "42",  # the guessable row number the engine used to send
        "",
        "campaign-7",  # another application's own value
        "99999999999999999999." + "0" * 24,  # out of bigint range
        "²." + "0" * 24,  # a Unicode digit
        "042." + REFERENCES.issue(42).partition(".")[2],
        REFERENCES.issue(42)[:-1],
        REFERENCES.issue(42) + "\x00",
        REFERENCES.issue(42).upper(),
    ],
)
def test_anything_else_names_no_recipient(value: str | None) -> None:
    assert REFERENCES.recipient_id(value) is None


def test_references_of_neighbouring_ids_share_nothing_guessable() -> None:
    tags = {REFERENCES.issue(i).partition(".")[2] for i in range(1, 1001)}
    assert len(tags) == 1000


# --- signatures -------------------------------------------------------------------------


def test_signatures_accept_any_bytes_and_only_the_right_digest() -> None:
    payload = b'{"entry": []}'
    good = sign("secret", payload)
    assert signature_valid("secret", payload, good)
    assert signature_valid("secret", payload, good.encode())
    assert signature_valid("secret", payload, good.upper().replace("SHA256=", "sha256="))
    for wrong in (
        None,
        "",
        b"",
        "sha256=",
        good[:-1],
        sign("other", payload),
        "sha256=é",
        b"\xff\xfe",
    ):
        assert not signature_valid("secret", payload, wrong)
    assert not signature_valid("secret", payload + b" ", good)


# --- parsing ----------------------------------------------------------------------------


def test_a_status_becomes_a_fact_with_its_number_and_verified_reference() -> None:
    parsed = parse_notification(
        body(
            [
                status("wamid.a", "delivered", biz_opaque_callback_data=REFERENCES.issue(7)),
                status("wamid.b", "read", biz_opaque_callback_data="7"),
                status(
                    "wamid.c",
                    "failed",
                    errors=[{"code": 131026, "title": "Message undeliverable", "error_data": {}}],
                    pricing={"billable": False, "pricing_model": "CBP", "category": "marketing"},
                    conversation={"id": "c1", "origin": {"type": "marketing"}},
                ),
            ]
        ),
        REFERENCES,
    )
    at = datetime.fromtimestamp(T0, UTC)
    assert parsed.refused == 0
    assert [(f.recipient_id, f.provider_message_id, f.kind, f.at) for f in parsed.facts] == [
        (7, "wamid.a", "delivered", at),
        (None, "wamid.b", "read", at),  # "7" is not a reference we issued
        (None, "wamid.c", "failed", at),
    ]
    assert {f.phone_number_id for f in parsed.facts} == {"PN1"}
    failed = parsed.facts[2]
    assert (failed.error_code, failed.error_message) == ("131026", "Message undeliverable")
    assert failed.pricing == Pricing(category="marketing", billable=False, pricing_model="CBP")
    assert parsed.facts[0].pricing is None


def test_replies_are_facts_other_inbound_messages_are_not() -> None:
    reply = {
        "from": "1555",
        "id": "wamid.in",
        "timestamp": str(T0),
        "type": "text",
        "context": {"from": "PN", "id": "wamid.out"},
    }
    plain = {"from": "1555", "id": "wamid.in2", "timestamp": str(T0), "type": "text"}
    # Signals (tests/test_signals.py) are facts of their own; other fields are skipped.
    other = {"field": "account_alerts", "value": {"entity_type": "WABA"}}
    document = msgspec.json.decode(body([], [reply, plain]))
    document["entry"][0]["changes"] += [other]
    parsed = parse_notification(msgspec.json.encode(document), REFERENCES)
    assert parsed.refused == 0
    [fact] = parsed.facts
    assert (fact.kind, fact.provider_message_id, fact.recipient_id) == (
        "replied",
        "wamid.out",
        None,
    )


@pytest.mark.parametrize(
    "bad",
    [
        status(errors=[{"code": 1, "title": "nul \x00 inside"}]),
        status(errors=[{"code": "13\x00", "title": "t"}]),
        status(wamid="wamid.\x00"),
        status(wamid=""),
        status(wamid="w" * 600),
        status(timestamp="²"),
        status(timestamp="1_700_000_000"),
        status(timestamp=" 1700000000"),
        status(timestamp="99999999999999999999"),
        status(timestamp=-1),
        status(id=7),
        {"status": "read", "timestamp": str(T0)},
        "not an object",
        status(errors="none"),
        status(biz_opaque_callback_data=12),
    ],
)
def test_a_fact_that_could_not_be_stored_is_refused_and_counted_alone(bad: Any) -> None:
    parsed = parse_notification(
        body([status("wamid.good"), bad, status("wamid.good2")]), REFERENCES
    )
    assert [f.provider_message_id for f in parsed.facts] == ["wamid.good", "wamid.good2"]
    assert parsed.refused == 1


def test_an_out_of_range_reference_is_just_not_ours() -> None:
    parsed = parse_notification(
        body(
            [
                status(biz_opaque_callback_data="99999999999999999999999"),
                status(biz_opaque_callback_data="²"),
            ]
        ),
        REFERENCES,
    )
    assert [f.recipient_id for f in parsed.facts] == [None, None] and parsed.refused == 0


def test_untracked_statuses_are_neither_facts_nor_refused() -> None:
    parsed = parse_notification(body([status(kind="deleted"), status(kind="warning")]), REFERENCES)
    assert parsed.facts == [] and parsed.refused == 0


def test_without_a_phone_number_id_nothing_can_match() -> None:
    parsed = parse_notification(body([status(), status()], metadata={}), REFERENCES)
    assert parsed.facts == [] and parsed.refused == 2


def test_a_change_whose_value_is_malformed_is_refused_alone() -> None:
    document = msgspec.json.decode(body([status("wamid.good")]))
    document["entry"][0]["changes"].append({"field": "messages", "value": {"statuses": "x"}})
    parsed = parse_notification(msgspec.json.encode(document), REFERENCES)
    assert [f.provider_message_id for f in parsed.facts] == ["wamid.good"]
    assert parsed.refused == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{", None),
        (b"[]", None),
        (b'"text"', None),
        (b"{}", "entry"),
        (b'{"entry": {}}', "entry"),
        (b'{"entry": [1]}', "entry[0]"),
        (b'{"entry": [{"changes": {}}]}', "entry[0].changes"),
        (b'{"entry": [{"changes": [{"field": 3}]}]}', "entry[0].changes[0].field"),
    ],
)
def test_a_body_that_is_not_a_notification_is_malformed(payload: bytes, field: str | None) -> None:
    with pytest.raises(MalformedPayload) as raised:
        parse_notification(payload, REFERENCES)
    assert raised.value.field == field
    if field is not None:
        assert raised.value.message.startswith(f"{field}: ")


def test_an_empty_notification_has_no_facts() -> None:
    parsed = parse_notification(b'{"entry": [{"changes": []}, {}]}', REFERENCES)
    assert parsed.facts == [] and parsed.refused == 0


@pytest.mark.parametrize(
    "pricing",
    [None, "free", {"billable": "yes"}, {"category": "c" * 500}, {"category": "\x00"}],
)
def test_a_pricing_that_cannot_be_read_costs_its_status_nothing(pricing: Any) -> None:
    parsed = parse_notification(body([status(pricing=pricing)]), REFERENCES)
    [fact] = parsed.facts
    assert fact.pricing is None and parsed.refused == 0
