"""`serve_api`: the HTTP API and Socket.IO on hypercorn's trio worker."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from api.app import create_app
from api.asgi import dispatcher
from api.socketio_server import SocketStream
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.service.engine import Engine

log = logging.getLogger(__name__)


async def serve_api(
    engine: Engine,
    settings: Settings,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started(port)` once listening (port 0: any).

    Must run inside `trio_asyncio.open_loop()` (python-socketio is asyncio).
    """
    sockets = SocketStream(settings.auth.jwt_secret, settings.redis.url)
    app = create_app(engine, settings, sockets=sockets)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.server.shutdown_grace_seconds
    # Our own bound, with the error envelope (hypercorn's default is larger anyway).
    config.h11_max_incomplete_size = 64 * 1024
    quart_app: Any = app
    asgi: Any = dispatcher(quart_app, sockets.asgi)
    async with trio.open_nursery() as nursery:
        await nursery.start(sockets.forward_events, engine.broadcaster)
        binds: list[str] = await nursery.start(
            partial(serve, asgi, config, mode="asgi", shutdown_trigger=trio.sleep_forever)
        )
        bound_port = int(binds[0].rsplit(":", 1)[1])
        log.debug("API bound to %s:%d", host, bound_port)
        task_status.started(bound_port)
