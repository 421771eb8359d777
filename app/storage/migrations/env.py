"""Alembic environment: runs migrations over the app's async engine."""

import asyncio
import contextlib
import fcntl

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.storage.models import Base

target_metadata = Base.metadata
POSTGRES_MIGRATION_LOCK = 0x5357_4D49


def run_sync_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction(), one_at_a_time(connection):
        context.run_migrations()


@contextlib.contextmanager
def one_at_a_time(connection):
    """Nodes starting together on an empty database migrate one after the other, and those
    after the first find nothing left to do. PostgreSQL: an advisory lock the migration's
    transaction holds. SQLite (one machine): an flock on the database file, which SQLite's
    own (fcntl) locks leave alone."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_MIGRATION_LOCK}
        )
        yield
        return
    path = connection.engine.url.database
    if connection.dialect.name != "sqlite" or not path or path == ":memory:":
        yield
        return
    with open(path, "rb") as database_file:
        fcntl.flock(database_file, fcntl.LOCK_EX)
        yield


async def run_async_migrations() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url", ""))
    async with engine.connect() as connection:
        await connection.run_sync(run_sync_migrations)
    await engine.dispose()


asyncio.run(run_async_migrations())
