"""`switchboard serve` processes started by tests, and the agents they make on them."""

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.storage import TEST_BACKEND, production_storage_env, storage_by_data_dir

ROOT = Path(__file__).resolve().parents[2]
TEST_PIPELINES = ROOT / "tests" / "pipelines"
ADMIN_KEY = "sk_test_admin_key_0123456789"
LOOPBACK_TOOLS_ENV = {"SWITCHBOARD_OUTBOUND_ALLOW": '["127.0.0.1"]'}
"""Test servers may reach the tests' loopback fakes (webhook tools, webhook receivers); an
attack test starts its server with `SWITCHBOARD_OUTBOUND_ALLOW=[]` instead."""
NO_LOAD_SHEDDING_ENV = {"SWITCHBOARD_LOAD_THRESHOLD": "1"}
"""Test servers refuse no call for CPU load: on a shared CI machine a busy moment of another
test would refuse calls at random. `tests/test_load_shedding.py` sets its own threshold."""


LEG_PORTS = range(20000, 25000) if TEST_BACKEND == "sqlite" else range(25000, 30000)
"""The ports this test leg hands out, below the kernel's ephemeral ones (32768 on). A server
binds only once it has loaded; meanwhile the other leg, running side by side, could be given
the same free port, and its server's /health would answer for this one (seen in CI: a test
talked to the other leg's server)."""
_handed_out: set[int] = set()


def free_port() -> int:
    """A port of this leg's that nothing listens on and that no test of this run was given."""
    while True:
        port = random.choice([p for p in LEG_PORTS if p not in _handed_out])
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


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
        if data_dir.resolve() not in storage_by_data_dir:
            storage_by_data_dir[data_dir.resolve()] = production_storage_env()
        env = {**storage_by_data_dir[data_dir.resolve()], **env}
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


def account_client(server, name: str) -> httpx.Client:
    """A client with the key of a new account."""
    with server.client() as admin:
        account = admin.post("/v1/accounts", json={"name": name}).json()
        key = admin.post(
            "/v1/api-keys", json={"account_id": account["id"], "name": f"{name} key"}
        ).json()
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key["secret"]}, timeout=30)
