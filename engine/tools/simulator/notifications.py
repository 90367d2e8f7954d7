"""Webhook bodies in WhatsApp's shapes. Pure: plain values in, bytes out.

Every body is `{"object": "whatsapp_business_account", "entry": [{"id": <WABA id>,
"changes": [{"field": ..., "value": ...}]}]}`; `field` is `messages` (statuses and
inbound messages), `message_template_status_update`, `phone_number_quality_update` or
`account_update`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from engine.tools.simulator.graph_errors import webhook_error

_encode = msgspec.json.Encoder().encode

# Per-message pricing (WhatsApp's model since July 2025): templates are billed as
# marketing; free-form messages answer a customer inside the service window, for free.
_TEMPLATE_PRICING = {
    "billable": True,
    "pricing_model": "PMP",
    "category": "marketing",
    "type": "regular",
}
_SERVICE_PRICING = {
    "billable": False,
    "pricing_model": "PMP",
    "category": "service",
    "type": "free_customer_service",
}


def _envelope(waba_id: str, field: str, value: dict[str, Any], stamp: int) -> bytes:
    return _encode(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": waba_id, "time": stamp, "changes": [{"field": field, "value": value}]}
            ],
        }
    )


def status(
    kind: str,
    *,
    wamid: str,
    to: str,
    callback: str | None,
    template: bool,
    stamp: int,
    phone_number_id: str,
) -> dict[str, Any]:
    """A `sent`, `delivered` or `read` status, with its conversation and pricing."""
    pricing = _TEMPLATE_PRICING if template else _SERVICE_PRICING
    wa_id = to.lstrip("+")
    item: dict[str, Any] = {
        "id": wamid,
        "status": kind,
        "timestamp": str(stamp),
        "recipient_id": wa_id,
    }
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    item["conversation"] = {
        "id": hashlib.md5(f"{phone_number_id}:{wa_id}".encode()).hexdigest(),
        "expiration_timestamp": str(stamp + 24 * 3600),
        "origin": {"type": pricing["category"]},
    }
    item["pricing"] = pricing
    return item


def failed_status(
    *, wamid: str, to: str, callback: str | None, code: int, stamp: int
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": "failed",
        "timestamp": str(stamp),
        "recipient_id": to.lstrip("+"),
    }
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    item["errors"] = [webhook_error(code)]
    return item


def reply(*, wamid: str, to: str, display_phone_number: str, stamp: int, n: int) -> dict[str, Any]:
    """An inbound text answering the message `wamid` (its `context.id`)."""
    return {
        "from": to.lstrip("+"),
        "id": f"wamid.in.{wamid}.{n}",
        "timestamp": str(stamp),
        "type": "text",
        "text": {"body": "Thanks!"},
        "context": {"from": display_phone_number, "id": wamid},
    }


def messages_body(
    *,
    waba_id: str,
    display_phone_number: str,
    phone_number_id: str,
    statuses: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    stamp: int,
) -> bytes:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
    }
    if messages:
        value["contacts"] = [
            {"profile": {"name": "Simulated"}, "wa_id": m["from"]} for m in messages
        ]
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return _envelope(waba_id, "messages", value, stamp)


def template_id(name: str, language: str) -> int:
    """A stable numeric id for a template, as WhatsApp gives each one."""
    return int.from_bytes(hashlib.sha256(f"{name}\0{language}".encode()).digest()[:6], "big")


def template_status_body(
    *,
    waba_id: str,
    event: str,
    name: str,
    language: str,
    reason: str | None,
    stamp: int,
) -> bytes:
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": template_id(name, language),
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason if reason is not None else "NONE",
    }
    if event == "PAUSED":
        value["other_info"] = {
            "title": "FIRST_PAUSE",
            "description": "Your WhatsApp message template has been paused for 3 hours "
            "due to low quality.",
        }
    return _envelope(waba_id, "message_template_status_update", value, stamp)


def quality_body(
    *, waba_id: str, display_phone_number: str, event: str, current_limit: str, stamp: int
) -> bytes:
    value = {
        "display_phone_number": display_phone_number,
        "event": event,
        "current_limit": current_limit,
    }
    return _envelope(waba_id, "phone_number_quality_update", value, stamp)


def account_update_body(
    *,
    waba_id: str,
    phone_number: str,
    event: str,
    restriction_info: list[dict[str, Any]] | None,
    ban_info: dict[str, Any] | None,
    violation_info: dict[str, Any] | None,
    stamp: int,
) -> bytes:
    value: dict[str, Any] = {"phone_number": phone_number, "event": event}
    if restriction_info is not None:
        value["restriction_info"] = restriction_info
    if ban_info is not None:
        value["ban_info"] = ban_info
    if violation_info is not None:
        value["violation_info"] = violation_info
    return _envelope(waba_id, "account_update", value, stamp)
