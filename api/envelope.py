"""The response envelope (docs/http-api.md, "The envelope"), and the error every handler raises.

Handlers return `success(...)` or raise `ApiError`; the app turns every error,
including Quart's own (404, 405, 413), into the same error envelope.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Response


class ApiError(Exception):
    """A request that cannot be served; becomes the error envelope."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def validation_error(field: str, rule: str, code: str = "validation_failed") -> ApiError:
    """400 naming the field and the rule: `throttleConfig.batchSize: expected ...`."""
    return ApiError(400, code, f"{field}: {rule}" if field else rule, field or None)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status=status, content_type="application/json")


def success(
    data: Any,
    message: str,
    *,
    status: int = 200,
    next_cursor: str | None = None,
    paginated: bool = False,
) -> Response:
    body: dict[str, Any] = {"success": True, "message": message, "data": data}
    if paginated:
        body["pagination"] = {"next_cursor": next_cursor}
    return json_response(body, status)


def failure(error: ApiError) -> Response:
    detail: dict[str, Any] = {"code": error.code}
    if error.field is not None:
        detail["field"] = error.field
    return json_response(
        {"success": False, "message": error.message, "error": detail}, error.status
    )
