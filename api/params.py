"""Path and query parameters: ids, `limit`, opaque keyset cursors, status filters."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Collection
from typing import Any, TypeVar

import msgspec
from quart import Response, request

from api.envelope import ApiError, not_found, success, validation_error
from engine.service import Page

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def resource_id(value: str, what: str) -> str:
    """A path id; anything but a UUID names nothing, so it is a 404 like any unknown id."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise not_found(what) from None


def limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise validation_error("limit", f"expected an integer from 1 to {MAX_LIMIT}")
    return value


def encode_cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def cursor(position_type: type[T]) -> T | None:
    """The position a `?cursor=` continues after, or None for the first page."""
    raw = request.args.get("cursor")
    if not raw:
        return None
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return msgspec.json.decode(data, type=position_type)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ApiError(
            400,
            "invalid_cursor",
            "cursor: not a cursor this API returned; use pagination.next_cursor as given",
            "cursor",
        ) from None


def choice(name: str, allowed: Collection[str]) -> str | None:
    """An optional filter such as `?status=` that must be one of `allowed`."""
    value = request.args.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise validation_error(name, "expected one of " + ", ".join(f'"{v}"' for v in allowed))
    return value


def next_cursor(rows: list[Any], page_size: int, position: Any) -> str | None:
    """The cursor after the last row when the page is full (there may be more)."""
    if len(rows) < page_size or not rows:
        return None
    return encode_cursor(position)


def page(result: Page, page_size: int, message: str) -> Response:
    """A list answer: the items and the cursor continuing after the last one."""
    return success(
        result.items,
        message,
        paginated=True,
        next_cursor=next_cursor(result.items, page_size, result.last),
    )


def id_cursor() -> str | None:
    """A cursor holding the last id of the previous page (a UUID)."""
    position = cursor(uuid.UUID)
    return str(position) if position is not None else None
