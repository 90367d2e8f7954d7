"""The Quart-Trio application: routes, authentication and the error envelope."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from api import context, idempotency
from api.auth import authenticate
from api.envelope import ApiError, failure
from api.routes import (
    accounts,
    campaigns,
    contacts,
    docs,
    health,
    in_doubt,
    links,
    queue,
    segments,
    webhooks,
)
from api.routes.dashboard import blueprint as dashboard_blueprint
from engine.core.variables import MissingVariables
from engine.service.errors import (
    DatabaseUnavailable,
    InvalidInput,
    InvalidReference,
    NotFound,
    TransitionRefused,
    Unstorable,
)
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.service.engine import Engine

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


class ClientCount(Protocol):
    @property
    def clients(self) -> int: ...


def create_app(
    engine: Engine, settings: Settings, *, sockets: ClientCount | None = None
) -> QuartTrio:
    """`sockets` (the Socket.IO server) only feeds the client count of /metrics."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.extensions[context.ENGINE] = engine
    app.extensions[context.SETTINGS] = settings
    app.extensions[context.SOCKETS] = sockets

    for module in (accounts, contacts, segments, campaigns, in_doubt, queue):
        app.register_blueprint(module.blueprint, url_prefix=API_PREFIX)
    for module in (webhooks, health, docs, links):
        app.register_blueprint(module.blueprint)
    app.register_blueprint(dashboard_blueprint)

    @app.before_request
    async def require_token() -> None:
        if request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/"):
            g.user_id = authenticate(settings.auth.jwt_secret, request.headers.get("Authorization"))

    idempotency.install(app, engine, API_PREFIX)

    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(TransitionRefused, _transition_refused)
    app.register_error_handler(InvalidReference, _invalid_reference)
    app.register_error_handler(InvalidInput, _invalid_input)
    app.register_error_handler(MissingVariables, _missing_variables)
    app.register_error_handler(Unstorable, _unstorable)
    app.register_error_handler(DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
    return app


async def _api_error(error: ApiError) -> Response:
    return failure(error)


async def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    match status:
        case 404:
            message, code = f"No route for {request.method} {request.path}", "not_found"
        case 405:
            message, code = (
                f"{request.method} is not allowed on {request.path}",
                "method_not_allowed",
            )
        case 413:
            limit = request.max_content_length
            message = f"The request body is larger than the limit of {limit} bytes"
            code = "payload_too_large"
        case _:
            message = error.description or error.name
            code = error.name.lower().replace(" ", "_")
    return failure(ApiError(status, code, message))


async def _not_found(error: NotFound) -> Response:
    return failure(ApiError(404, "not_found", f"{error.what} not found"))


async def _transition_refused(error: TransitionRefused) -> Response:
    return failure(ApiError(400, error.code, error.message))


async def _invalid_reference(error: InvalidReference) -> Response:
    return failure(ApiError(400, "validation_failed", error.message, error.field))


async def _invalid_input(error: InvalidInput) -> Response:
    return failure(ApiError(400, "validation_failed", error.message, error.field))


async def _missing_variables(error: MissingVariables) -> Response:
    # A preview or test send rendered for someone who lacks a variable.
    return failure(ApiError(400, "missing_variable", error.message, error.field))


async def _unstorable(error: Unstorable) -> Response:
    # Input that passed validation but PostgreSQL cannot store (a NUL character in
    # text, say). The statement failed, so its transaction changed nothing.
    return failure(
        ApiError(
            400, "invalid_value", f"The request contains a value that cannot be stored: {error}"
        )
    )


async def _database_unavailable(error: DatabaseUnavailable) -> Response:
    # An outage, not a bug: the client may retry; the daemon rides it out.
    log.warning("%s %s: database unavailable (%s)", request.method, request.path, error)
    response = failure(
        ApiError(503, "database_unavailable", "The database is unavailable; try again shortly")
    )
    response.headers["Retry-After"] = "5"
    return response


async def _unexpected(error: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.path, exc_info=error)
    return failure(ApiError(500, "internal_error", "Something went wrong on our side; try again"))
