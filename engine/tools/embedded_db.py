"""An embedded PostgreSQL for development and the demo, used when DATABASE_URL is unset.

It is the `pgserver` package's PostgreSQL binaries running on a data directory of our own,
listening only on a unix socket inside that directory (no TCP port, so it never clashes with a
system PostgreSQL). Blocking: call it at start-up or through `trio.to_thread.run_sync`.

As root, PostgreSQL refuses to run, so pgserver runs it as a system user `pgserver` (created with
`useradd` on first use), chowns the cluster directory to it, and adds o+rx to every directory
above it so that user can reach it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from engine.settings import Settings

__all__ = ["EmbeddedPostgresError", "open_embedded_postgres"]

logger = logging.getLogger(__name__)
_pgserver_logger = logging.getLogger("pgserver")

# The cluster lives in a subdirectory so that the data directory can hold other local state.
CLUSTER_DIRNAME = "postgres"


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL could not be started."""


@contextmanager
def open_embedded_postgres(data_dir: str) -> Iterator[str]:
    """Start (or join) the embedded PostgreSQL in `<data_dir>/postgres` and yield its DSN,
    `postgresql://postgres@/postgres?host=<socket dir>&port=<port>` (trust auth, unix socket).
    The server stops on exit unless another process still uses it."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    cluster = root / CLUSTER_DIRNAME
    logger.warning(
        "DATABASE_URL is not set: using an embedded PostgreSQL in %s (development only)", cluster
    )
    _forget_dead_handles(cluster)
    _quiet_pgserver()
    try:
        server = get_server(cluster, cleanup_mode="stop")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        raise EmbeddedPostgresError(
            f"embedded PostgreSQL in {cluster} failed to start ({error}); see {cluster / 'log'}"
        ) from error
    # pgserver counts the handles of this process; the last one out stops the server.
    with server:
        info = server.get_postmaster_info()
        if info.socket_dir is None or info.port is None:
            raise EmbeddedPostgresError(f"embedded PostgreSQL in {cluster} has no unix socket")
        yield (
            f"postgresql://postgres@/postgres"
            f"?host={quote(str(info.socket_dir), safe='/')}&port={info.port}"
        )


def _quiet_pgserver() -> None:
    """pgserver logs every command line it runs, with initdb's whole output, at INFO: pages per
    start. Its failures are logged at ERROR (and raised), so WARNING keeps them. A level set on
    the `pgserver` logger by whoever configured logging is left alone."""
    if _pgserver_logger.level == logging.NOTSET:
        _pgserver_logger.setLevel(logging.WARNING)


def _forget_dead_handles(cluster: Path) -> None:
    """pgserver only stops the server when the exiting process is the last one in its list of
    handle holders; a process that was killed stays in the list forever and would keep the
    server running after every later run. Drop such processes before joining."""
    handles = cluster / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _is_running(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured PostgreSQL, or an embedded one for development."""
    if settings.database.url:
        yield settings.database.url
        return
    with open_embedded_postgres(settings.database.data_dir) as dsn:
        yield dsn
