"""What a handler may reach: the engine's interface, the settings and the caller's user id."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from quart import current_app, g, request

from engine.settings import Settings

if TYPE_CHECKING:
    from engine.service.engine import Engine

ENGINE = "campaign_engine.engine"
SETTINGS = "campaign_engine.settings"
SOCKETS = "campaign_engine.sockets"


def engine() -> Engine:
    return cast("Engine", current_app.extensions[ENGINE])


def settings() -> Settings:
    return cast(Settings, current_app.extensions[SETTINGS])


def user_id() -> str:
    """The caller, authenticated by the `/api/v1` blueprint's before_request."""
    return cast(str, g.user_id)


async def body() -> bytes:
    """The raw request body (Quart enforces MAX_CONTENT_LENGTH while reading it)."""
    return await request.get_data(cache=True, as_text=False, parse_form_data=False)
