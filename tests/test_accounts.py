"""Accounts and keys: isolation between accounts on every route, revocation, hashing."""

import httpx
import pytest

from app.client import SessionClient
from app.storage.accounts import hash_key
from app.storage.models import Base
from tests.helpers.calls import refused
from tests.helpers.servers import make_agent
from tests.helpers.storage import query_database


@pytest.fixture(scope="module")
def tenants(server):
    """Two accounts, each with its own key, agent and session."""
    admin = server.client()
    result = {}
    for name in ("alpha", "beta"):
        account = admin.post("/v1/accounts", json={"name": name}).json()
        key = admin.post(
            "/v1/api-keys", json={"account_id": account["id"], "name": f"{name} key"}
        ).json()
        client = httpx.Client(base_url=server.url, headers={"X-API-Key": key["secret"]}, timeout=30)
        agent = make_agent(client, pipeline="scripted", name=f"{name} agent")
        session = client.post(f"/v1/agents/{agent['id']}/sessions").json()
        result[name] = {
            "account": account,
            "key": key,
            "client": client,
            "agent": agent,
            "session": session,
        }
    yield result
    admin.close()
    for tenant in result.values():
        tenant["client"].close()


def test_admin_creates_accounts_and_keys_shown_once(server, tenants):
    admin = server.client()
    key = tenants["alpha"]["key"]
    assert key["secret"].startswith("sk_") and key["prefix"] == key["secret"][:8]
    listed = admin.get(
        "/v1/api-keys", params={"account_id": tenants["alpha"]["account"]["id"]}
    ).json()["items"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "secret" not in listed[0] and listed[0]["last_used_at"] is not None
    names = {a["name"] for a in admin.get("/v1/accounts", params={"limit": 100}).json()["items"]}
    assert {"alpha", "beta", "Default"} <= names
    assert (
        admin.post("/v1/api-keys", json={"account_id": "acc_missing", "name": "x"}).status_code
        == 404
    )
    assert admin.post("/v1/accounts", json={"name": ""}).status_code == 422


def test_account_routes_need_the_admin_key(tenants):
    client = tenants["alpha"]["client"]
    for method, path in [
        ("POST", "/v1/accounts"),
        ("GET", "/v1/accounts"),
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/api-keys"),
        ("DELETE", "/v1/api-keys/key_x"),
        ("PATCH", "/v1/accounts/acc_x"),
    ]:
        response = client.request(method, path, json={"name": "x", "account_id": "x"})
        assert response.status_code == 403, (method, path)
        assert response.json()["code"] == "forbidden"


def test_each_account_sees_only_its_own(tenants):
    alpha, beta = tenants["alpha"], tenants["beta"]
    client = alpha["client"]
    agent_id, session_id = beta["agent"]["id"], beta["session"]["session_id"]
    for method, path, body in [
        ("GET", f"/v1/agents/{agent_id}", None),
        ("PATCH", f"/v1/agents/{agent_id}", {"name": "stolen"}),
        ("DELETE", f"/v1/agents/{agent_id}", None),
        ("POST", f"/v1/agents/{agent_id}/sessions", {}),
        ("GET", f"/v1/sessions/{session_id}", None),
        ("GET", f"/v1/sessions/{session_id}/transcript", None),
    ]:
        theirs = client.request(method, path, json=body)
        missing = client.request(
            method,
            path.replace(agent_id, "agt_nothere").replace(session_id, "ses_nothere"),
            json=body,
        )
        assert theirs.status_code == 404, (method, path)
        # Exactly as a missing id: same status, same code, no hint it exists.
        assert theirs.json()["code"] == missing.json()["code"]
    assert agent_id not in [
        a["id"] for a in client.get("/v1/agents", params={"limit": 100}).json()["items"]
    ]
    assert session_id not in [
        s["session_id"] for s in client.get("/v1/sessions", params={"limit": 100}).json()["items"]
    ]
    assert client.get("/v1/sessions", params={"agent_id": agent_id}).json()["total"] == 0
    assert beta["client"].get(f"/v1/agents/{agent_id}").json()["name"] == "beta agent"


async def test_websocket_joins_are_scoped_to_the_account(server, tenants):
    alpha, beta = tenants["alpha"], tenants["beta"]
    key = alpha["key"]["secret"]
    for url in (
        server.ws_url(f"/v1/agents/{beta['agent']['id']}/session?api_key={key}"),
        server.ws_url(f"/v1/sessions/{beta['session']['session_id']}/ws?api_key={key}"),
    ):
        client = await refused(url)
        assert client.close_code == 4404
    async with SessionClient(
        server.ws_url(f"/v1/agents/{alpha['agent']['id']}/session?api_key={key}")
    ) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "session.end"})


def test_revoked_key_is_refused_at_once(server):
    admin = server.client()
    account = admin.post("/v1/accounts", json={"name": "revocable"}).json()
    key = admin.post("/v1/api-keys", json={"account_id": account["id"], "name": "temp"}).json()
    client = httpx.Client(base_url=server.url, headers={"X-API-Key": key["secret"]})
    assert client.get("/v1/agents").status_code == 200
    revoked = admin.delete(f"/v1/api-keys/{key['id']}").json()
    assert revoked["revoked_at"] is not None
    response = client.get("/v1/agents")
    assert response.status_code == 401 and response.json()["message"] == "invalid API key"
    assert admin.delete("/v1/api-keys/key_missing").status_code == 404


def test_keys_are_stored_hashed(server, tenants):
    secret = tenants["alpha"]["key"]["secret"]
    rows = query_database(server, "SELECT key_hash, prefix FROM api_keys")
    dump = "\n".join(
        str(query_database(server, f"SELECT * FROM {table}")) for table in Base.metadata.tables
    )
    assert (hash_key(secret), secret[:8]) in rows
    assert secret not in dump and server.api_key not in dump
