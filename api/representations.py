"""Rows as the API shows them: snake_case objects, times ISO-8601 UTC with `Z`.

The campaign object lives in `engine.core.campaign_view`, shared with Socket.IO events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.core.campaign_view import iso
from engine.store.database import Record
from engine.store.recipients import recipient_row


def account_object(row: Record) -> dict[str, Any]:
    # Never the access token: it is write-only.
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "phone_number_id": row["phone_number_id"],
        "api_url": row["api_url"],
        "status": row["status"],
        "messages_per_second": row["messages_per_second"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def contact_object(row: Record) -> dict[str, Any]:
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


def segment_object(row: Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "filter": row["filter"],
        "size": int(row["size"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def recipient_object(row: Record) -> dict[str, Any]:
    shown = recipient_row(row)
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in shown.items()}
