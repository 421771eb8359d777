"""The storage layer on the test backend: SQLite on the SQLite leg, PostgreSQL on the
PostgreSQL + Redis leg (`SWITCHBOARD_TEST_BACKEND=postgres`, see tests/conftest.py)."""

import asyncio
import sys
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, update
from sqlalchemy.exc import IntegrityError

from app.storage import accounts, agents, nodes, sessions
from app.storage.db import Database
from app.storage.ids import new_id, utcnow
from app.storage.models import DEFAULT_ACCOUNT_ID, Agent, Base, Node, Session, TranscriptEntry
from tests.helpers.servers import make_agent, start_server
from tests.helpers.storage import TEST_BACKEND, database_url


async def test_migrations_create_every_table(db):
    async with db.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {
        "accounts",
        "api_keys",
        "agents",
        "sessions",
        "transcript_entries",
        "server_secrets",
        "alembic_version",
    } <= tables
    await db.migrate()  # idempotent


async def test_nodes_starting_together_on_an_empty_database_all_migrate(empty_database_url):
    """Several machines deployed at once each migrate at start: one builds the schema, the
    others wait for it and find nothing left to do, and none of them fails to start."""
    migrate = "import sys; from app.storage.db import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    nodes_starting = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", migrate, empty_database_url, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(6)
    ]
    outcomes = [await asyncio.wait_for(node.communicate(), 120) for node in nodes_starting]
    failures = [
        errors.decode()[-2000:]
        for node, (_, errors) in zip(nodes_starting, outcomes, strict=True)
        if node.returncode != 0
    ]
    assert failures == [], failures[0]
    database = Database(empty_database_url)
    try:
        async with database.engine.connect() as conn:
            differences = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
    finally:
        await database.dispose()
    assert differences == []


async def test_migrations_match_the_models(db):
    """What the migrations build is what the models describe (columns, types, keys, indexes)."""
    async with db.engine.connect() as conn:
        differences = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    assert differences == []


async def test_bootstrap_key_is_stored_hashed_and_generated_once(db):
    async with db.sessions() as s:
        generated = await accounts.ensure_bootstrap_key(s, None)
        assert generated and generated.startswith("sk_")
        assert await accounts.ensure_bootstrap_key(s, None) is None
        key = await accounts.find_key(s, generated)
        assert key.account_id == DEFAULT_ACCOUNT_ID and key.is_admin
        assert key.key_hash == accounts.hash_key(generated) and generated not in key.key_hash
        assert await accounts.find_key(s, generated + "x") is None
        assert await accounts.ensure_bootstrap_key(s, "sk_from_env") is None
        assert (await accounts.find_key(s, "sk_from_env")).is_admin
        first = await accounts.server_secret(s, "token_signing")
        assert first == await accounts.server_secret(s, "token_signing")


async def test_agents_sessions_and_transcripts_round_trip(db):
    async with db.sessions() as s:
        await accounts.ensure_default_account(s)
        agent = Agent(
            id=new_id("agt"),
            account_id=DEFAULT_ACCOUNT_ID,
            name="A",
            voice_id="joe",
            system_prompt="p",
            tools=[{"name": "t", "description": "d", "parameters": {"type": "object"}}],
            pipeline="local",
        )
        s.add(agent)
        await s.commit()
        items, total = await agents.list_agents(
            s, DEFAULT_ACCOUNT_ID, status=None, limit=10, offset=0
        )
        assert total == 1 and items[0].tools[0]["name"] == "t"
        assert await agents.get_agent(s, "acc_other", agent.id) is None

        now = utcnow()
        live = Session(
            id=new_id("ses"),
            account_id=DEFAULT_ACCOUNT_ID,
            agent_id=agent.id,
            expires_at=now + timedelta(minutes=15),
            session_metadata={"k": [1, 2]},
        )
        stale = Session(
            id=new_id("ses"),
            account_id=DEFAULT_ACCOUNT_ID,
            agent_id=agent.id,
            expires_at=now - timedelta(seconds=1),
        )
        s.add_all([live, stale])
        await s.commit()
        assert (await sessions.get_session(s, DEFAULT_ACCOUNT_ID, stale.id)).status == "expired"
        assert await sessions.claim(s, live, "node-1")
        assert not await sessions.claim(s, live, "node-2")
        for speaker, text in (
            ("AGENT", "Hello"),
            ("USER", "Hi there"),
            ("AGENT", "How can I help?"),
        ):
            await sessions.add_transcript_entry(
                s, live.id, speaker=speaker, content=text, timestamp=utcnow()
            )
        await sessions.finish(
            s, live.id, status="completed", end_reason="caller_hangup", error=None
        )

    async with db.sessions() as s:
        stored = await sessions.get_session(s, DEFAULT_ACCOUNT_ID, live.id)
        assert stored.status == "completed" and stored.end_reason == "caller_hangup"
        assert stored.session_metadata == {"k": [1, 2]}
        assert stored.started_at.tzinfo is not None and stored.duration_secs >= 0
        entries = await sessions.transcript(s, live.id)
        assert [(e.speaker, e.content) for e in entries] == [
            ("AGENT", "Hello"),
            ("USER", "Hi there"),
            ("AGENT", "How can I help?"),
        ]
        page, total = await sessions.list_sessions(
            s, DEFAULT_ACCOUNT_ID, agent_id=agent.id, status=None, limit=1, offset=0
        )
        assert total == 2 and len(page) == 1


async def test_concurrent_claims_let_exactly_one_connection_in(db):
    async with db.sessions() as s:
        await accounts.ensure_default_account(s)
        agent = Agent(
            id=new_id("agt"),
            account_id=DEFAULT_ACCOUNT_ID,
            name="A",
            voice_id="joe",
            system_prompt="p",
        )
        session = Session(
            id=new_id("ses"),
            account_id=DEFAULT_ACCOUNT_ID,
            agent_id=agent.id,
            expires_at=utcnow() + timedelta(minutes=1),
        )
        s.add_all([agent, session])
        await s.commit()

    async def claim():
        async with db.sessions() as s:
            return await sessions.claim(s, await s.get(Session, session.id), "node-1")

    assert sorted(await asyncio.gather(*(claim() for _ in range(5)))) == [False] * 4 + [True]


async def test_foreign_keys_are_enforced(db):
    """SQLite checks foreign keys as PostgreSQL does: a row naming a missing parent is refused."""
    async with db.sessions() as s:
        s.add(
            TranscriptEntry(
                session_id="ses_missing", speaker="USER", content="hi", timestamp=utcnow()
            )
        )
        with pytest.raises(IntegrityError):
            await s.commit()


async def test_server_stores_a_call_on_the_test_backend(tmp_path, scripted_llm):
    """The whole server on the leg's storage: API, a call and its transcript, in SQLite's file
    or in PostgreSQL (`DATABASE_URL`) and nowhere else."""
    from app.client import SessionClient
    from tests.helpers.calls import agent_ws, wait_for_status

    scripted_llm.reset()
    scripted_llm.script("Stored in the database.")
    server = start_server(tmp_path / "stored", env={"SCRIPTED_LLM_URL": scripted_llm.url})
    try:
        with server.client() as api:
            agent = make_agent(api, pipeline="scripted")
            async with SessionClient(agent_ws(server, agent["id"])) as client:
                ready = await client.wait_for("session.ready", timeout=60)
                await client.send_event({"type": "input.text", "text": "Hello database."})
                await client.wait_for("transcript.agent", timeout=60)
                await client.send_event({"type": "session.end"})
                await client.wait_for("session.ended", timeout=10)
            wait_for_status(api, ready["session_id"], "completed")
            items = api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
            assert [i["content"] for i in items] == ["Hello database.", "Stored in the database."]
        assert (tmp_path / "stored" / "switchboard.db").exists() == (TEST_BACKEND == "sqlite")
        assert database_url(server).startswith(
            "postgresql" if TEST_BACKEND == "postgres" else "sqlite"
        )
    finally:
        server.stop()


async def test_a_lost_node_s_calls_end_once_however_many_nodes_reap_at_the_same_moment(db):
    now = utcnow()
    async with db.sessions() as s:
        await accounts.ensure_default_account(s)
        agent = Agent(
            id=new_id("agt"),
            account_id=DEFAULT_ACCOUNT_ID,
            name="A",
            voice_id="joe",
            system_prompt="p",
        )
        s.add(agent)
        await s.flush()

        def live_call(host: str) -> Session:
            return Session(
                id=new_id("ses"),
                account_id=DEFAULT_ACCOUNT_ID,
                agent_id=agent.id,
                status="active",
                host=host,
                started_at=now - timedelta(seconds=90),
                expires_at=now + timedelta(minutes=1),
            )

        alive, lost = live_call("node-alive"), [live_call("node-dead") for _ in range(3)]
        s.add_all([alive, *lost])
        await s.commit()
        await nodes.renew(s, "node-alive", now, live_calls=1, load=0.25)
        await nodes.renew(s, "node-dead", now, live_calls=3, load=0.5)
        await s.execute(
            update(Node)
            .where(Node.id == "node-dead")
            .values(heartbeat_at=now - timedelta(seconds=31))
        )
        await s.commit()

    followed_up = []

    async def follow_up(s, session_id: str) -> None:
        assert (
            await s.get(Session, session_id)
        ).end_reason == "node_lost"  # in the transaction that ends it
        followed_up.append(session_id)

    async def reap() -> list[str]:
        async with db.sessions() as s:
            return await nodes.fail_lost_calls(s, lease_secs=30, on_ended=follow_up)

    ended = [
        session_id
        for result in await asyncio.gather(*(reap() for _ in range(4)))
        for session_id in result
    ]
    assert sorted(ended) == sorted(followed_up) == sorted(session.id for session in lost)
    async with db.sessions() as s:
        for session in lost:
            stored = await s.get(Session, session.id)
            assert (stored.status, stored.end_reason) == (
                "failed",
                "node_lost",
            ) and stored.duration_secs >= 90
        assert (await s.get(Session, alive.id)).status == "active"
        assert [node.id for node in await s.scalars(select(Node))] == ["node-alive"]
        await nodes.remove(s, "node-alive")
        assert await s.scalar(select(Node)) is None
