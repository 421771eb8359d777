"""Shared fixtures: real server processes, a scripted LLM, HTTP and WebSocket clients."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from sqlalchemy.ext.asyncio import create_async_engine

from app.storage.db import Database
from tests.fakes.scripted_llm import ScriptedLLM

ROOT = Path(__file__).resolve().parent.parent
TEST_PIPELINES = ROOT / "tests" / "pipelines"
ADMIN_KEY = "sk_test_admin_key_0123456789"
LOOPBACK_TOOLS_ENV = {"SWITCHBOARD_OUTBOUND_ALLOW": '["127.0.0.1"]'}
"""Test servers may reach the tests' loopback fakes (webhook tools, webhook receivers); an
attack test starts its server with `SWITCHBOARD_OUTBOUND_ALLOW=[]` instead."""
NO_LOAD_SHEDDING_ENV = {"SWITCHBOARD_LOAD_THRESHOLD": "1"}
"""Test servers refuse no call for CPU load: on a shared CI machine a busy moment of another
test would refuse calls at random. `tests/test_load_shedding.py` sets its own threshold."""

TEST_BACKEND = os.environ.get("SWITCHBOARD_TEST_BACKEND", "sqlite")
"""`sqlite` (one SQLite file per server, no Redis) or `postgres` (a fresh PostgreSQL database
and Redis key prefix per server): which storage the servers started by tests run on."""
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI") == "true"
_created_databases: list[str] = []
_created_prefixes: list[str] = []
_storage_by_data_dir: dict[Path, dict[str, str]] = {}
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


def pytest_collection_modifyitems(config, items):
    """The PostgreSQL + Redis leg runs only what touches storage (not the `storage_free` tests).
    Without PostgreSQL or Redis it is skipped, with the reason, except in CI, where it fails."""
    if TEST_BACKEND == "sqlite":
        return
    if TEST_BACKEND != "postgres":
        raise pytest.UsageError(
            f"SWITCHBOARD_TEST_BACKEND must be sqlite or postgres, not {TEST_BACKEND!r}"
        )
    storage_free = [item for item in items if item.get_closest_marker("storage_free")]
    if storage_free:
        config.hook.pytest_deselected(items=storage_free)
        items[:] = [item for item in items if not item.get_closest_marker("storage_free")]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A `switchboard serve` process started by a test, on its own port and data dir."""

    url: str
    api_key: str | None
    data_dir: Path
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]
    """The environment the test gave the server (its storage included)."""

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def ws_url(self, path: str) -> str:
        return self.url.replace("http", "ws", 1) + path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    data_dir: Path,
    *,
    preload: list[str] | None = None,
    env: dict[str, str] | None = None,
    api_key: str | None = ADMIN_KEY,
    port: int | None = None,
    workers: int = 1,
    timeout: float = 180,
) -> ServerProcess:
    """Start `switchboard serve` exactly as a user would, and wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = env or {}
    if TEST_BACKEND == "postgres" and "DATABASE_URL" not in env:
        if data_dir.resolve() not in _storage_by_data_dir:
            _storage_by_data_dir[data_dir.resolve()] = production_storage_env()
        env = {**_storage_by_data_dir[data_dir.resolve()], **env}
    port = port or free_port()
    log_path = data_dir / "server.log"
    server_env = {
        **{k: v for k, v in os.environ.items() if k != "SWITCHBOARD_API_KEY"},
        **({"SWITCHBOARD_API_KEY": api_key} if api_key else {}),
        "SWITCHBOARD_DATA_DIR": str(data_dir),
        "SWITCHBOARD_PORT": str(port),
        "SWITCHBOARD_PIPELINES_PATH": f'["{TEST_PIPELINES}"]',
        "SWITCHBOARD_PRELOAD_PIPELINES": str(preload or []).replace("'", '"'),
        **LOOPBACK_TOOLS_ENV,
        **NO_LOAD_SHEDDING_ENV,
        **env,
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--workers", str(workers)],
            cwd=ROOT,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", api_key, data_dir, process, log_path, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise TimeoutError(f"server did not start within {timeout}s:\n{server.log()[-3000:]}")


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


def make_agent(api: httpx.Client, **fields) -> dict:
    body = {
        "name": "Test agent",
        "voice_id": "joe",
        "system_prompt": "You are a helpful receptionist. Answer in one short sentence.",
        **fields,
    }
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def scripted_agent(api: httpx.Client, **fields) -> dict:
    """An agent on the `scripted` test pipeline (its words come from the scripted LLM)."""
    return make_agent(api, pipeline="scripted", **fields)
