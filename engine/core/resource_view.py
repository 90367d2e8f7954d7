"""Accounts, contacts, segments and recipients as the API shows them. Pure.

Snake_case objects, times ISO-8601 UTC with `Z` (see `campaign_view.iso`); the
campaign object itself is in `engine.core.campaign_view`. Each function takes a
row (any mapping of column names) and returns plain JSON-ready values.
"""

from __future__ import annotations

from typing import Any

from engine.core.campaign_view import iso


def account_object(row: Any) -> dict[str, Any]:
    # Never the access token: it is write-only.
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "phone_number_id": row["phone_number_id"],
        "api_url": row["api_url"],
        "status": row["status"],
        "messages_per_second": row["messages_per_second"],
        "business_account_id": row["business_account_id"],
        "portfolio_id": row["portfolio_id"],
        "messaging_limit": row["messaging_limit"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def contact_object(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "phone": row["phone"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "email": row["email"],
        "company": row["company"],
        "tags": list(row["tags"]),
        "attributes": row["attributes"],
        "opted_out": row["opted_out"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def segment_object(row: Any) -> dict[str, Any]:
    """`row` carries a `size` column: the contacts the segment matches now."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "filter": row["filter"],
        "size": int(row["size"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def recipient_object(row: Any) -> dict[str, Any]:
    """A campaign_recipients row."""
    return {
        "contact_id": str(row["contact_id"]) if row["contact_id"] else None,
        "phone": row["phone"],
        "status": row["status"],
        "attempts": row["attempts"],
        "error_code": row["error_code"],
        "error_message": row["error_message"],
        "provider_message_id": row["provider_message_id"],
        "sent_at": iso(row["sent_at"]),
        "delivered_at": iso(row["delivered_at"]),
        "read_at": iso(row["read_at"]),
        "replied_at": iso(row["replied_at"]),
        "pricing": pricing_object(row),
        # Its A/B variant: an index into the campaign's `variants` (null without them,
        # or for an A/B test's rest until the winner is chosen).
        "variant": row["variant"],
        # Why a pending recipient waits (`messaging_limit`, `send_window`) and until when.
        "deferred_reason": row["deferred_reason"],
        "deferred_until": iso(row["not_before"]) if row["deferred_reason"] else None,
    }


def pricing_object(row: Any) -> dict[str, Any] | None:
    """What the recipient's message is billed as (the status webhooks' `pricing`), or
    None before a status told it."""
    if row["pricing_category"] is None and row["pricing_billable"] is None:
        return None
    return {
        "category": row["pricing_category"],
        "billable": row["pricing_billable"],
        "pricing_model": row["pricing_model"],
        "type": row["pricing_type"],
    }


def account_event_object(row: Any) -> dict[str, Any]:
    """An account_events row: one signal (docs/webhooks.md) and what the engine did."""
    return {
        "id": int(row["id"]),
        "account_id": str(row["account_id"]),
        "kind": row["kind"],
        "event": row["event"],
        "content": row["content"],
        "paused_campaigns": [str(c) for c in row["paused_campaigns"]],
        "resumed_campaigns": [str(c) for c in row["resumed_campaigns"]],
        "received_at": iso(row["received_at"]),
    }
