import logging
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import pytest
import trio
import trio_asyncio

from engine.tools.embedded_db import open_embedded_postgres


async def _fetchval(dsn: str, query: str) -> object:
    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
        try:
            return await trio_asyncio.aio_as_trio(conn.fetchval)(query)
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()


async def _with_embedded_postgres(data_dir: Path, query: str) -> object:
    # As the daemon does: start and stop it in a worker thread, since both block.
    with ExitStack() as stack:
        dsn = await trio.to_thread.run_sync(
            stack.enter_context, open_embedded_postgres(str(data_dir))
        )
        try:
            return await _fetchval(dsn, query)
        finally:
            await trio.to_thread.run_sync(stack.close)


async def test_serves_asyncpg_and_stops_on_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(60), caplog.at_level(logging.WARNING, logger="engine.tools.embedded_db"):
        assert await _with_embedded_postgres(data_dir, "select 1") == 1

    cluster = data_dir / "postgres"
    assert caplog.messages == [
        f"DATABASE_URL is not set: using an embedded PostgreSQL in {cluster} (development only)"
    ]
    assert (cluster / "PG_VERSION").exists()
    assert not (cluster / "postmaster.pid").exists(), "the server should be stopped"


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(60):
        await _with_embedded_postgres(data_dir, "create table kept as select 1 as x")
        found = await _with_embedded_postgres(data_dir, "select to_regclass('kept')::text")
    assert found == "kept"
