"""Several worker processes sharing state through Redis (`SWITCHBOARD_REDIS_URL`), on both legs.

Skipped, with the reason printed, when no Redis answers (a failure in CI)."""

import httpx
import pytest

from app.client import SessionClient
from tests.helpers.calls import agent_ws
from tests.helpers.dashboard import logged_in
from tests.helpers.servers import make_agent, start_server
from tests.helpers.storage import redis_env, redis_unavailable, skip_unless_available


@pytest.fixture(scope="module")
def workers_server(tmp_path_factory, scripted_llm):
    skip_unless_available(redis_unavailable())
    server = start_server(
        tmp_path_factory.mktemp("workers"),
        workers=2,
        env={
            **redis_env(),
            "SWITCHBOARD_RATE_LIMIT_PER_MINUTE": "20",
            "SCRIPTED_LLM_URL": scripted_llm.url,
        },
    )
    yield server
    server.stop()


def test_rate_limit_is_shared_by_the_workers(workers_server):
    admin = workers_server.client()
    account = admin.post("/v1/accounts", json={"name": "shared window"}).json()
    key = admin.post("/v1/api-keys", json={"account_id": account["id"], "name": "k"}).json()[
        "secret"
    ]
    # A new connection per request, so the supervisor spreads them over both workers.
    statuses = [
        httpx.get(workers_server.url + "/v1/agents", headers={"X-API-Key": key}).status_code
        for _ in range(24)
    ]
    assert statuses == [200] * 20 + [429] * 4


async def test_deleting_an_agent_ends_its_call_in_whichever_worker_runs_it(workers_server):
    key = workers_server.api_key
    for _ in range(4):
        agent = make_agent(
            httpx.Client(base_url=workers_server.url, headers={"X-API-Key": key}),
            pipeline="scripted",
        )
        async with SessionClient(agent_ws(workers_server, agent["id"])) as client:
            await client.wait_for("session.ready", timeout=60)
            response = httpx.delete(
                f"{workers_server.url}/v1/agents/{agent['id']}", headers={"X-API-Key": key}
            )
            assert response.status_code == 200
            ended = await client.wait_for("session.ended", timeout=15)
            assert ended["reason"] == "agent_deleted"


async def test_hanging_up_ends_the_call_in_whichever_worker_runs_it(workers_server):
    with workers_server.client() as api:
        agent = make_agent(api, pipeline="scripted")
    for _ in range(4):
        async with SessionClient(agent_ws(workers_server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=60)
            with logged_in(workers_server) as operator:  # a new connection: either worker
                hung_up = operator.post(f"/live/{ready['session_id']}/hangup")
                assert hung_up.status_code == 303
            ended = await client.wait_for("session.ended", timeout=15)
            assert ended["reason"] == "hung_up"
