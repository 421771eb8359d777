"""The storage a test leg runs on: SQLite files, or fresh PostgreSQL databases and Redis prefixes."""

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
import redis
from sqlalchemy.ext.asyncio import create_async_engine

from app.storage import accounts, telephony
from app.storage.ids import new_id
from app.storage.models import DEFAULT_ACCOUNT_ID, Agent

if TYPE_CHECKING:
    from tests.helpers.servers import ServerProcess

TEST_BACKEND = os.environ.get("SWITCHBOARD_TEST_BACKEND", "sqlite")
"""`sqlite` (one SQLite file per server, no Redis) or `postgres` (a fresh PostgreSQL database
and Redis key prefix per server): which storage the servers started by tests run on."""
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI") == "true"
_created_databases: list[str] = []
_created_prefixes: list[str] = []
storage_by_data_dir: dict[Path, dict[str, str]] = {}
"""Each data dir's PostgreSQL + Redis storage (postgres backend): a server restarted on the
same data dir finds what it stored, as it would on SQLite."""


def _run_postgres(*statements: str) -> None:
    """Run admin statements on the PostgreSQL server (in a thread: tests may hold a running loop)."""

    async def run():
        connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def fresh_postgres_url() -> str:
    """A new, empty PostgreSQL database, dropped when the test session ends."""
    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    _run_postgres(f'CREATE DATABASE "{name}"')
    _created_databases.append(name)
    return f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"


def fresh_redis_prefix() -> str:
    """A Redis key prefix no other server uses, its keys deleted when the test session ends."""
    prefix = f"sbtest-{uuid.uuid4().hex[:12]}"
    _created_prefixes.append(prefix)
    return prefix


def redis_env() -> dict[str, str]:
    """Environment for a server (or several sharing it) on Redis, under a key prefix of its own."""
    return {"SWITCHBOARD_REDIS_URL": REDIS_URL, "SWITCHBOARD_REDIS_PREFIX": fresh_redis_prefix()}


def production_storage_env() -> dict[str, str]:
    """Environment for a server (or several sharing it) on fresh PostgreSQL + Redis storage."""
    return {"DATABASE_URL": fresh_postgres_url(), **redis_env()}


def cluster_storage_env() -> dict[str, str]:
    """Storage for several nodes of one cluster (`production_storage_env`); the test is skipped,
    with the reason printed, when PostgreSQL or Redis don't answer."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return production_storage_env()
    except Exception as exc:
        pytest.skip(f"cluster leg skipped: PostgreSQL or Redis unavailable ({exc})")


def drop_created_storage() -> None:
    """Drop the databases and delete the Redis keys this test session created."""
    if _created_databases:
        _run_postgres(
            *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in _created_databases)
        )
    if _created_prefixes:
        client = redis.Redis.from_url(REDIS_URL)
        for prefix in _created_prefixes:
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)


def database_url(server: "ServerProcess") -> str:
    """The database a test server stores into, as SQLAlchemy names it (async driver)."""
    url = server.env.get("DATABASE_URL")
    if url is None:
        return f"sqlite+aiosqlite:///{server.data_dir / 'switchboard.db'}"
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def query_database(server: "ServerProcess", statement: str) -> list[tuple]:
    """Run one SQL statement on a test server's database, whichever the backend; its rows."""

    async def run():
        engine = create_async_engine(database_url(server))
        try:
            async with engine.begin() as connection:
                result = await connection.exec_driver_sql(statement)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def redis_unavailable() -> str | None:
    """Why no Redis can be used here, or None."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return f"no Redis answers at {REDIS_URL} ({exc})"
    return None


def production_storage_unavailable() -> str | None:
    """Why the PostgreSQL + Redis leg can't run here (no server answers), or None."""
    try:
        _run_postgres("SELECT 1")
    except (OSError, asyncpg.PostgresError) as exc:
        return f"no PostgreSQL answers at {POSTGRES_URL} ({exc})"
    return redis_unavailable()


def skip_unless_available(why_not: str | None) -> None:
    """Skip the test, with the reason, when a server it needs doesn't answer; in CI, fail it."""
    if why_not is None:
        return
    if IN_CI:
        pytest.fail(f"{why_not}: CI must provide it")
    pytest.skip(why_not)


async def add_agent(s, numbers: list[str], status: str = "active") -> Agent:
    """An agent row of the default account (made if missing) answering `numbers`, committed."""
    await accounts.ensure_default_account(s)
    agent = Agent(
        id=new_id("agt"),
        account_id=DEFAULT_ACCOUNT_ID,
        name="a",
        voice_id="joe",
        system_prompt="p",
        phone_numbers=[],
        status=status,
    )
    s.add(agent)
    await telephony.assign_numbers(s, agent, numbers)
    await s.commit()
    return agent
