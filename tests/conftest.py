"""Shared fixtures and hooks: real server processes, a scripted LLM, carrier and webhook fakes,
HTTP clients, the storage leg. Helper functions live in `tests/helpers/`."""

import json
import os

import pytest

from app.storage.db import Database
from tests.fakes.scripted_llm import ScriptedLLM
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.helpers.servers import start_server
from tests.helpers.storage import (
    IN_CI,
    TEST_BACKEND,
    drop_created_storage,
    fresh_postgres_url,
    production_storage_unavailable,
)
from tests.helpers.twilio import ACCOUNT_SID, AUTH_TOKEN, twilio_env

# Each leg's servers start their own local LLM server: the legs run side by side, and a server
# shared between them would stop with the leg that started it, under the other leg's calls.
os.environ.setdefault(
    "SWITCHBOARD_LOCAL_LLM_PORT", {"sqlite": "8765", "postgres": "8766"}.get(TEST_BACKEND, "8765")
)


def pytest_collection_modifyitems(config, items):
    """The PostgreSQL + Redis leg runs only what touches storage (not the `storage_free` tests,
    unless they are `cluster` tests of a shared piece on its own), the SQLite leg all but the
    `cluster` tests (their nodes share PostgreSQL + Redis on either leg).
    Without PostgreSQL or Redis the second leg is skipped, with the reason, except in CI, where it
    fails."""
    if TEST_BACKEND == "sqlite":
        cluster = [item for item in items if item.get_closest_marker("cluster")]
        if cluster:
            config.hook.pytest_deselected(items=cluster)
            items[:] = [item for item in items if not item.get_closest_marker("cluster")]
        return
    if TEST_BACKEND != "postgres":
        raise pytest.UsageError(
            f"SWITCHBOARD_TEST_BACKEND must be sqlite or postgres, not {TEST_BACKEND!r}"
        )
    storage_free = [
        item
        for item in items
        if item.get_closest_marker("storage_free") and not item.get_closest_marker("cluster")
    ]
    if storage_free:
        config.hook.pytest_deselected(items=storage_free)
        items[:] = [item for item in items if item not in storage_free]
    why_not = production_storage_unavailable()
    if why_not is None:
        return
    if IN_CI:
        raise pytest.UsageError(f"the PostgreSQL + Redis leg can't run in CI: {why_not}")
    skip = pytest.mark.skip(reason=f"PostgreSQL + Redis leg skipped: {why_not}")
    for item in items:
        item.add_marker(skip)


@pytest.fixture
def empty_database_url(tmp_path) -> str:
    """The SQLAlchemy URL of an empty database of the leg's backend (SQLite file or new PostgreSQL database)."""
    if TEST_BACKEND == "postgres":
        return fresh_postgres_url().replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
async def db(empty_database_url):
    """A freshly migrated database of the leg's backend."""
    database = Database(empty_database_url)
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture(scope="session", autouse=True)
def _drop_test_storage():
    yield
    drop_created_storage()


@pytest.fixture(scope="session")
def scripted_llm():
    llm = ScriptedLLM().start()
    yield llm
    llm.stop()


@pytest.fixture
def llm(scripted_llm):
    """The scripted LLM, emptied of earlier tests' replies and requests."""
    scripted_llm.reset()
    return scripted_llm


@pytest.fixture(scope="session")
def server(tmp_path_factory, scripted_llm):
    """One server for the session: the `local` pipeline (real models and local LLM server)
    and the `scripted` test pipeline, both preloaded."""
    server = start_server(
        tmp_path_factory.mktemp("server"),
        preload=["local", "scripted"],
        env={"SCRIPTED_LLM_URL": scripted_llm.url},
    )
    yield server
    server.stop()


@pytest.fixture
def api(server):
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def priced_server(tmp_path_factory, scripted_llm):
    """A server of the module's own (its default account holds only the module's calls) whose
    scripted pipeline's LLM has prices; a dropped call fails after 1 s, a webhook after 1 attempt."""
    pricing = {"openai": {"scripted": {"input_mtok": 3000.0, "output_mtok": 15000.0}}}
    server = start_server(
        tmp_path_factory.mktemp("priced"),
        preload=["scripted"],
        env={
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "SWITCHBOARD_PRICING": json.dumps(pricing),
            "SWITCHBOARD_RESUME_GRACE_SECS": "1",
            "SWITCHBOARD_WEBHOOK_MAX_ATTEMPTS": "1",
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def twilio_rest():
    """A local stand-in for Twilio's REST API (one per test module: what it records is the module's)."""
    fake = FakeTwilioRest(ACCOUNT_SID, AUTH_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def twilio_server(tmp_path_factory, scripted_llm, twilio_rest):
    """A server with Twilio credentials, every carrier's webhook signing key and a known token secret."""
    server = start_server(
        tmp_path_factory.mktemp("twilio"),
        preload=["scripted"],
        env=twilio_env(scripted_llm, twilio_rest),
    )
    yield server
    server.stop()


@pytest.fixture
def tw(twilio_server):
    """An API client of `twilio_server`."""
    with twilio_server.client() as client:
        yield client


@pytest.fixture(scope="module")
def webhook_receiver():
    """A loopback receiver of the server's webhooks (one per test module)."""
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()
