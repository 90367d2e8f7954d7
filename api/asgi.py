"""The ASGI entry point: `/socket.io/` to python-socketio (asyncio), the rest to Quart (trio)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio
import trio_asyncio

from api.ws_outlet import OUTLET_KEY, Outlet

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SOCKETIO_PREFIX = "/socket.io"


def dispatcher(quart_app: ASGIApp, socketio_app: ASGIApp) -> ASGIApp:
    """One ASGI app for hypercorn's trio worker.

    Socket.IO traffic crosses into the asyncio loop once per request or
    connection; `receive` and `send` cross back into trio per message, except
    a websocket's writes: they go through its outlet (api/ws_outlet.py), which
    python-socketio's websocket finds in the scope.
    """
    to_socketio = trio_asyncio.aio_as_trio(socketio_app)

    async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
        outlet = Outlet(send)
        async with trio.open_nursery() as nursery:
            await nursery.start(outlet.run)
            try:
                await to_socketio(
                    {**scope, OUTLET_KEY: outlet},
                    trio_asyncio.trio_as_aio(receive),
                    trio_asyncio.trio_as_aio(send),
                )
            finally:
                outlet.end()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(SOCKETIO_PREFIX):
            if scope["type"] == "websocket":
                await websocket(scope, receive, send)
                return
            await to_socketio(
                scope, trio_asyncio.trio_as_aio(receive), trio_asyncio.trio_as_aio(send)
            )
        else:
            await quart_app(scope, receive, send)  # lifespan included

    return app
