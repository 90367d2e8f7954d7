"""Signals by webhook, the pure side: template, quality and account updates parsed into
facts (each refused alone when malformed), and what the engine decides about each."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine.core.callback_reference import CallbackReferences
from engine.core.signals import (
    LowerMessagingLimit,
    PauseCampaigns,
    ResumeCampaigns,
    decide,
    template_key,
)
from engine.core.webhook_payload import parse_notification
from engine.messages import AccountSignal, QualitySignal, TemplateStatusSignal
from engine.tools.simulator import notifications

REFERENCES = CallbackReferences(b"k" * 32)
WABA = "102290129340398"


def body(*changes: tuple[str, Any], waba: Any = WABA) -> bytes:
    entry: dict[str, Any] = {
        "time": 1_760_000_000,
        "changes": [{"field": f, "value": v} for f, v in changes],
    }
    if waba is not None:
        entry["id"] = waba
    return msgspec.json.encode({"object": "whatsapp_business_account", "entry": [entry]})


def template(event: Any = "PAUSED", **extra: Any) -> tuple[str, Any]:
    value = {
        "event": event,
        "message_template_id": 806312974732579,
        "message_template_name": "promo",
        "message_template_language": "en_US",
        "reason": "NONE",
    } | extra
    return "message_template_status_update", value


def quality(**extra: Any) -> tuple[str, Any]:
    value = {"display_phone_number": "15550783881", "event": "DOWNGRADE"} | extra
    return "phone_number_quality_update", value


def account(event: str = "ACCOUNT_RESTRICTION", **extra: Any) -> tuple[str, Any]:
    return "account_update", {"phone_number": "15550783881", "event": event} | extra


def signals(payload: bytes) -> tuple[list[Any], int]:
    parsed = parse_notification(payload, REFERENCES)
    assert parsed.facts == []
    return list(parsed.signals), parsed.refused


# --- parsing ------------------------------------------------------------------------------


def test_the_simulators_signals_parse_into_typed_facts() -> None:
    """The simulator posts what Meta documents; each change becomes one fact."""
    posted = [
        notifications.template_status_body(
            waba_id=WABA, event="PAUSED", name="promo", language="en_US", reason=None, stamp=1
        ),
        notifications.quality_body(
            waba_id=WABA,
            display_phone_number="15550783881",
            event="DOWNGRADE",
            current_limit="TIER_250",
            stamp=1,
        ),
        notifications.account_update_body(
            waba_id=WABA,
            phone_number="15550783881",
            event="ACCOUNT_RESTRICTION",
            restriction_info=[
                {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": 1}
            ],
            ban_info=None,
            violation_info=None,
            stamp=1,
        ),
    ]
    [paused], [downgraded], [restricted] = (signals(p)[0] for p in posted)
    assert isinstance(paused, TemplateStatusSignal)
    assert (paused.business_account_id, paused.event) == (WABA, "PAUSED")
    assert (paused.template_name, paused.template_language) == ("promo", "en_US")
    assert paused.template_id == str(notifications.template_id("promo", "en_US"))
    assert msgspec.json.decode(paused.content)["other_info"]["title"] == "FIRST_PAUSE"
    assert isinstance(downgraded, QualitySignal)
    assert (downgraded.event, downgraded.current_limit) == ("DOWNGRADE", "TIER_250")
    assert downgraded.max_daily_limit is None
    assert downgraded.display_phone_number == "15550783881"
    assert isinstance(restricted, AccountSignal)
    assert restricted.restriction_types == ("RESTRICTED_BIZ_INITIATED_MESSAGING",)
    assert restricted.phone_number == "15550783881"


def test_the_portfolio_limit_of_a_quality_update_is_read() -> None:
    [signal], refused = signals(
        body(quality(current_limit="TIER_1K", max_daily_conversations_per_business="TIER_2K"))
    )
    assert (signal.current_limit, signal.max_daily_limit, refused) == ("TIER_1K", "TIER_2K", 0)


def test_ban_violation_and_metadata_are_read() -> None:
    [banned, violated], refused = signals(
        body(
            account(
                "DISABLED_UPDATE",
                ban_info={"waba_ban_state": "DISABLE", "waba_ban_date": "2026-12-01"},
                metadata={"phone_number_id": "PN1"},
            ),
            account("ACCOUNT_VIOLATION", violation_info={"violation_type": "SCAM"}),
        )
    )
    assert refused == 0
    assert (banned.ban_state, banned.phone_number_id) == ("DISABLE", "PN1")
    assert violated.violation_type == "SCAM" and violated.restriction_types == ()


@pytest.mark.parametrize(
    "bad",
    [
        template(message_template_name=""),  # names nothing
        template(message_template_name=7),
        template(message_template_name="x" * 513),
        template(event=None),
        template(event=""),
        template(reason="nul \x00 inside"),
        template(message_template_language=["en"]),
        quality(event="FLAGGED", current_limit=250),
        quality(event="E" * 200),
        account(restriction_info={"restriction_type": "X"}),
        account(restriction_info=[{"expiration": 1}]),
        account(ban_info="DISABLE"),
        account(note="\x00"),  # the log keeps the value as jsonb, which cannot hold NUL
        account(note="x" * 20_000),  # beyond what the log keeps of one signal
        ("account_update", "not an object"),
        ("phone_number_quality_update", {"display_phone_number": "1"}),  # no event
    ],
)
def test_a_malformed_signal_is_refused_and_counted_alone(bad: tuple[str, Any]) -> None:
    found, refused = signals(body(template(), bad, account()))
    assert [type(s).__name__ for s in found] == ["TemplateStatusSignal", "AccountSignal"]
    assert refused == 1


def test_a_signal_that_names_neither_an_account_nor_a_number_is_refused() -> None:
    assert signals(body(template(), waba=None)) == ([], 1)
    [signal], refused = signals(body(template(metadata={"phone_number_id": "PN1"}), waba=None))
    assert (signal.business_account_id, signal.phone_number_id, refused) == (None, "PN1", 0)
    [numbered], _ = signals(body(template(), waba=1234))
    assert numbered.business_account_id == "1234"


def test_other_fields_are_neither_facts_nor_refused() -> None:
    payload = body(("account_alerts", {"x": 1}), ("security", 3), template())
    found, refused = signals(payload)
    assert len(found) == 1 and refused == 0


# --- decisions ------------------------------------------------------------------------------


def template_signal(event: str, language: str | None = "en_US", reason: str | None = None) -> Any:
    return TemplateStatusSignal(WABA, event, "promo", language, "1", reason, b"{}")


def account_signal(
    event: str, restrictions: tuple[str, ...] = (), ban_state: str | None = None
) -> Any:
    return AccountSignal(WABA, event, None, restrictions, ban_state, None, b"{}")


@pytest.mark.parametrize(
    ("signal", "expected"),
    [
        (
            template_signal("PAUSED", reason="LOW_QUALITY"),
            PauseCampaigns(
                "template:en_US:promo",
                "WhatsApp paused the template promo (en_US): LOW_QUALITY",
                "promo",
                "en_US",
            ),
        ),
        (
            template_signal("DISABLED", reason="NONE"),
            PauseCampaigns(
                "template:en_US:promo",
                "WhatsApp disabled the template promo (en_US)",
                "promo",
                "en_US",
            ),
        ),
        (
            template_signal("PAUSED", language=None),
            PauseCampaigns("template::promo", "WhatsApp paused the template promo", "promo", None),
        ),
        (template_signal("APPROVED"), ResumeCampaigns("template:en_US:promo")),
        (template_signal("REJECTED"), None),
        (template_signal("FLAGGED"), None),
        (template_signal("REINSTATED"), None),
        (
            account_signal("ACCOUNT_RESTRICTION", ("RESTRICTED_BIZ_INITIATED_MESSAGING",)),
            PauseCampaigns(
                "account:ACCOUNT_RESTRICTION",
                "WhatsApp restricted the account: RESTRICTED_BIZ_INITIATED_MESSAGING",
            ),
        ),
        (
            account_signal(
                "ACCOUNT_RESTRICTION",
                ("RESTRICTED_ADD_PHONE_NUMBER_ACTION", "RESTRICTED_CUSTOMER_INITIATED_MESSAGING"),
            ),
            None,
        ),
        (account_signal("ACCOUNT_RESTRICTION"), None),  # no restriction listed: nothing stops
        (account_signal("ACCOUNT_RESTRICTION", ("",)), None),  # an entry without its type
        (
            account_signal("DISABLED_UPDATE", ban_state="DISABLE"),
            PauseCampaigns("account:DISABLED_UPDATE", "WhatsApp disabled the account"),
        ),
        (account_signal("DISABLED_UPDATE", ban_state="SCHEDULE_FOR_DISABLE"), None),
        (account_signal("DISABLED_UPDATE", ban_state="REINSTATE"), None),
        (account_signal("ACCOUNT_VIOLATION"), None),
        (
            QualitySignal(WABA, "DOWNGRADE", "1555", "TIER_250", "TIER_1K", b"{}"),
            LowerMessagingLimit(250),
        ),
        (
            # The portfolio's limit wins over the number's deprecated current_limit.
            QualitySignal(WABA, "UPGRADE", "1555", "TIER_1K", None, b"{}", None, "TIER_10K"),
            LowerMessagingLimit(10_000),
        ),
        (QualitySignal(WABA, "FLAGGED", "1555", None, None, b"{}"), None),
        (QualitySignal(WABA, "THROUGHPUT_UPGRADE", "1555", "TIER_UNLIMITED", None, b"{}"), None),
        (QualitySignal(WABA, "ONBOARDING", "1555", "TIER_NOT_SET", None, b"{}"), None),
    ],
)
def test_what_each_signal_does(signal: Any, expected: Any) -> None:
    assert decide(signal) == expected


def test_a_template_key_starts_with_its_language() -> None:
    # Languages hold no ":", so a name holding one cannot pass for another language.
    assert template_key("a:b", "en") == "template:en:a:b"
    assert template_key("promo", None) == "template::promo"
