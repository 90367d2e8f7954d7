"""`campaign-engine serve`: the engine, the HTTP API and Socket.IO in one trio run.

Shutdown (SIGINT/SIGTERM): the HTTP server stops first, then the supervisor
stops claiming, actors let in-flight sends finish (within
`server.shutdown_grace_seconds`), store outcomes and cursors, release their
leases, and the process exits 0.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import msgspec
import trio

from api.server import serve_api
from api.webhook_listener import serve_webhook_listener
from api.webhooks.receive import door_for
from engine import asyncio_loop
from engine.core.callback_reference import CallbackReferences
from engine.gateway import Gateway
from engine.service.engine import Engine, open_engine
from engine.settings import Settings
from engine.store import secrets
from engine.store.database import Database, apply_migrations, open_database
from engine.transport.cloud_api import CloudApiGateway

log = logging.getLogger(__name__)


class Listening(msgspec.Struct, frozen=True):
    url: str
    port: int
    instance_id: str
    webhook_url: str | None = None  # the dedicated webhook listener's, when configured


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # Per-request access lines from hypercorn would drown the engine's own.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)


# glibc's malloc serves a block of at least its mmap threshold (128 KiB at first) with
# a mapping of its own, unmapped when freed; but freeing such a block raises the
# threshold to its size (up to 32 MiB), so after the first import body (~1 MB per
# 10,000 contacts) bodies and their copies come from the heap, and what they leave
# free there between long-lived blocks stays in the process. Setting the threshold
# keeps it at 128 KiB (it also stops glibc moving its trim threshold): the daemon ends
# 8 MB above idle after imports instead of 17 MB (measured with benchmarks/memory_probe.py).
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 * 1024
_MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def configure_allocator() -> bool:
    """Fix glibc's mmap threshold (see above) unless the environment sets glibc's own
    thresholds; False when nothing was set (another C library, or left to the environment)."""
    if any(name in os.environ for name in _MALLOC_ENVIRONMENT):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))


# The cyclic collector. Python's default collects the young generation every 700
# container allocations, and each full collection walks every tracked object; a
# running daemon allocates thousands per message (tasks, coroutines, structs) and
# holds a few hundred thousand long-lived ones from start-up (modules, classes,
# functions) that can never be garbage. So: start-up's objects are frozen out of
# every collection, and the young generation is collected per 10,000 allocations
# (a few MB of young objects at most; reference counting frees nearly all of them
# anyway, only cycles wait for the collector).
_YOUNG_COLLECTION_THRESHOLD = 10_000


def configure_collector() -> None:
    """For the daemon's process, once everything is imported: freeze what exists,
    collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_THRESHOLD, older, oldest)


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def open_migrated_database(dsn: str, settings: Settings) -> AsyncIterator[Database]:
    async with open_database(
        dsn,
        min_size=settings.database.pool_min_size,
        max_size=settings.database.pool_max_size,
        operation_timeout=settings.database.operation_timeout_seconds,
    ) as db:
        await apply_migrations(db)
        yield db


async def serve(
    settings: Settings,
    dsn: str,
    *,
    host: str,
    port: int,
    gateway: Gateway | None = None,
    instance_id: str | None = None,
    task_status: trio.TaskStatus[tuple[Listening, Engine]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until SIGINT/SIGTERM (or cancellation)."""
    instance_id = instance_id or new_instance_id()
    async with asyncio_loop.open_loop(), open_migrated_database(dsn, settings) as db:
        # Issued by the gateway, verified by the webhook doors: one key per database.
        references = CallbackReferences(await secrets.callback_key(db))
        gateway = gateway or CloudApiGateway(
            connect_timeout=settings.whatsapp.connect_timeout_seconds,
            read_timeout=settings.whatsapp.read_timeout_seconds,
            callback_references=references,
        )
        async with (
            open_engine(
                db, settings, gateway, instance_id=instance_id, callback_references=references
            ) as engine,
            trio.open_nursery() as nursery,
        ):
            await _serve_doors(engine, settings, host, port, instance_id, nursery, task_status)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("%s received: stopping", signal.Signals(signum).name)
                    break
            nursery.cancel_scope.cancel()
    log.info("stopped")


async def _serve_doors(
    engine: Engine,
    settings: Settings,
    host: str,
    port: int,
    instance_id: str,
    nursery: trio.Nursery,
    task_status: trio.TaskStatus[tuple[Listening, Engine]],
) -> None:
    """The HTTP API and, when `webhooks.listen_port` is set, the webhook listener."""
    bound: int = await nursery.start(
        lambda task_status: serve_api(
            engine, settings, host=host, port=port, task_status=task_status
        )
    )
    webhook_url: str | None = None
    hooks = settings.webhooks
    if hooks.listen_port is not None:
        webhook_port: int = await nursery.start(
            partial(
                serve_webhook_listener,
                door_for(engine, settings),
                host=hooks.listen_host,
                port=hooks.listen_port,
            )
        )
        webhook_url = f"http://{hooks.listen_host}:{webhook_port}/webhooks/whatsapp"
        log.info("webhooks listening on %s", webhook_url)
    listening = Listening(
        url=f"http://{host}:{bound}", port=bound, instance_id=instance_id, webhook_url=webhook_url
    )
    log.info("listening on %s", listening.url)
    task_status.started((listening, engine))


async def migrate(settings: Settings, dsn: str) -> list[str]:
    async with asyncio_loop.open_loop(), open_database(dsn, min_size=1, max_size=1) as db:
        return await apply_migrations(db)
