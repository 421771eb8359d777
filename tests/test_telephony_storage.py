"""Telephony storage on the leg's backend (SQLite or PostgreSQL): the 0002_telephony migration, number routing,
single-use relay tokens, phone-call rows."""

import asyncio
from datetime import timedelta

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, inspect, select

from app.storage import telephony
from app.storage.db import Database, alembic_config, upgrade_to_head
from app.storage.ids import new_id, utcnow
from app.storage.models import DEFAULT_ACCOUNT_ID, Account, Agent, PhoneCall, PhoneNumber, Session
from tests.helpers.storage import add_agent


async def test_migration_adds_the_telephony_tables(db):
    async with db.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        agent_columns = {
            c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("agents"))
        }
    assert {"agent_instances", "phone_calls", "used_relay_tokens", "phone_numbers"} <= tables
    assert "phone_numbers" in agent_columns


async def test_a_number_routes_to_the_active_agent_that_has_it(db):
    async with db.sessions() as s:
        old = await add_agent(s, ["+15550001111"])
        await telephony.release_numbers(s, old.id)  # as deleting the agent does
        await s.commit()
        agent = await add_agent(s, ["+15550002222", "+15550001111"])
        await add_agent(s, ["+155500011110"])
        assert (await telephony.agent_for_number(s, "+15550001111")).id == agent.id
        assert await telephony.agent_for_number(s, "+1555000111") is None
        assert await telephony.agent_for_number(s, "+15559999999") is None


def insert_as_it_was(connection, table: Table, rows: list[dict]) -> None:
    """Insert `rows` into `table` as the database has it now: only the columns it has, each
    missing value from the model's default."""
    stored = Table(table.name, MetaData(), autoload_with=connection)
    for row in rows:
        values = {}
        for column in stored.columns:
            default = table.columns[column.name].default
            if column.name in row:
                values[column.name] = row[column.name]
            elif default is not None:
                values[column.name] = default.arg(None) if default.is_callable else default.arg
        connection.execute(stored.insert().values(values))


async def test_the_ownership_migration_gives_a_shared_number_to_the_newest_live_agent(
    empty_database_url,
):
    url = empty_database_url
    config = alembic_config(url)
    before = ScriptDirectory.from_config(config).get_revision("0012_security_numbers").down_revision
    await asyncio.to_thread(command.upgrade, config, before)
    database = Database(url)
    now = utcnow()
    rows = {
        "old": (["+15550001111", "+15550002222"], "active"),
        "new": (["+15550001111"], "paused"),
        "gone": (["+15550003333"], "deleted"),
    }
    async with database.sessions() as s:
        s.add(Account(id=DEFAULT_ACCOUNT_ID, name="default"))
        await s.commit()
    # The agents table as it was before the migration (today's model has columns added since).
    agents = [
        {
            "id": f"agt_{key}",
            "account_id": DEFAULT_ACCOUNT_ID,
            "name": key,
            "voice_id": "joe",
            "system_prompt": "p",
            "phone_numbers": numbers,
            "status": status,
            "created_at": now + timedelta(seconds=age),
        }
        for age, (key, (numbers, status)) in enumerate(rows.items())
    ]
    async with database.engine.begin() as connection:
        await connection.run_sync(insert_as_it_was, Agent.__table__, agents)
    await asyncio.to_thread(upgrade_to_head, url)
    async with database.sessions() as s:
        held = {row.number: row.agent_id for row in await s.scalars(select(PhoneNumber))}
        assert held == {"+15550001111": "agt_new", "+15550002222": "agt_old"}
        assert (await s.get(Agent, "agt_old")).phone_numbers == ["+15550002222"]
    await database.dispose()


async def test_a_relay_token_is_used_once(db):
    async with db.sessions() as s:
        assert await telephony.use_relay_token(s, "jti-1", "ses_1") is True
        assert await telephony.use_relay_token(s, "jti-1", "ses_1") is False
        assert await telephony.use_relay_token(s, "jti-2", "ses_1") is True


async def test_stream_start_marks_the_call_in_progress(db):
    async with db.sessions() as s:
        agent = await add_agent(s, [])
        now = utcnow()
        session = Session(
            id=new_id("ses"),
            account_id=DEFAULT_ACCOUNT_ID,
            agent_id=agent.id,
            connection_type="twilio",
            created_at=now,
            expires_at=now,
        )
        s.add(session)
        await s.commit()
        s.add(
            PhoneCall(
                id=new_id("call"),
                account_id=DEFAULT_ACCOUNT_ID,
                agent_id=agent.id,
                session_id=session.id,
                direction="inbound",
                from_number="+1",
                to_number="+2",
            )
        )
        await s.commit()
        await telephony.stream_started(s, session.id, "twilio", "CA123")
        call = await telephony.call_for_session(s, session.id)
        assert (call.status, call.call_sid) == ("in-progress", "CA123")
        assert (await telephony.call_by_sid(s, "CA123")).id == call.id
        await telephony.stream_ended(s, session.id)
        assert (await telephony.call_for_session(s, session.id)).status == "completed"
