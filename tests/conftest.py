"""Shared fixtures: the real PostgreSQL (one fresh database per test, cloned from a
migrated template), the real Redis, and the trio-asyncio loop."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import trio_asyncio

from engine import asyncio_loop
from engine.store.database import Database, apply_migrations, open_database

pytest_plugins = ["tests.hang_report"]

ADMIN_DSN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


def _admin(statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """A database with every migration applied, cloned by each test."""
    import trio

    name = f"ce_template_{os.getpid()}"
    _admin(f"DROP DATABASE IF EXISTS {name}")
    _admin(f"CREATE DATABASE {name}")

    async def migrate() -> None:
        async with (
            trio_asyncio.open_loop(),
            open_database(dsn_for(name), min_size=1, max_size=1) as db,
        ):
            await apply_migrations(db)

    trio.run(migrate)
    yield name
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    name = f"ce_test_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name} TEMPLATE {template_database}")
    yield dsn_for(name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    name = f"ce_empty_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    yield dsn_for(name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def aio_loop() -> AsyncIterator[object]:
    async with asyncio_loop.open_loop() as loop:  # the daemon's loop
        yield loop


@pytest.fixture
async def db(aio_loop: object, database_url: str) -> AsyncIterator[Database]:
    async with open_database(database_url, min_size=1, max_size=8) as database:
        yield database
