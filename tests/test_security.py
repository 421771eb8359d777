"""Attacks from one tenant on other tenants, on the server and on the network it runs in
(issue 14: phone-number hijack, server-side request forgery, outbound dialing abuse,
secrets read back). Each attack is refused: status, error code, nothing stored, nothing sent."""

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from aiohttp import web

from app import outbound
from app.client import SessionClient
from app.settings import Settings
from tests.audio import speech
from tests.conftest import TEST_BACKEND, make_agent, production_storage_env, start_server
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.threaded import ThreadedServer
from tests.fakes.twilio_client import TwilioMediaStreamsClient
from tests.test_cloud_post_call import verify
from tests.test_dashboard import logged_in
from tests.test_session_websocket import agent_ws, wait_for_status
from tests.test_twilio import (  # noqa: F401  (twilio_rest, twilio_server, tw: fixtures)
    ACCOUNT_SID,
    CALLER,
    signed_post,
    tw,
    twilio_env,
    twilio_rest,
    twilio_server,
)


class Trap(ThreadedServer):
    """A loopback HTTP server that records every request; `/redirect` answers 307 to `/target`."""

    def __init__(self):
        super().__init__()
        self.received: list[dict] = []

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{path:.*}", self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        self.received.append(
            {"path": request.path, "headers": dict(request.headers), "body": await request.read()}
        )
        if request.path == "/redirect":
            raise web.HTTPTemporaryRedirect("/target")
        return web.json_response({"secret": "internal data"})


@pytest.fixture(scope="module")
def trap():
    server = Trap().start()
    yield server
    server.stop()


def refusal(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return body


def invalid(response: httpx.Response, field: tuple, error_type: str) -> None:
    """A 422 naming `field` (its location in the body) with the given error type."""
    body = refusal(response, 422, "validation_error")
    assert [(tuple(d["loc"][1:]), d["type"]) for d in body["details"]] == [(field, error_type)], (
        body
    )


# --- Item 3: the outbound address policy, unit by unit ---

REFUSED_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8000/admin",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fec0::1]/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://198.18.0.1/",
    "http://192.0.0.1/",
    "http://[2001:db8::1]/",
    "http://localhost/",
    "http://LOCALHOST:9000/",
    "http://localhost./",
    "http://api.localhost/",
    "https://user:password@example.com/",
    "ftp://example.com/",
    "http:///nohost",
    "http://ｌｏｃａｌｈｏｓｔ/",
    "http://１２７.0.0.1/",
    "http://[::1%25lo]/",
]
ALLOWED_URLS = [
    "https://example.com/hook",
    "http://api.example.com:8080/tools?x=1",
    "https://8.8.8.8/",
    "http://1.1.1.1/",
    "http://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",
    "http://172.32.0.1/",
    "http://192.169.0.1/",
    "http://localhost.example.com/",
    "http://10.0.0.5.nip.io/",
    "http://bücher.de/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_private_and_local_urls_are_refused(url):
    assert outbound.url_refusal(Settings(outbound_allow=[]), url) is not None


@pytest.mark.parametrize("url", ALLOWED_URLS)
def test_public_urls_are_allowed(url):
    assert outbound.url_refusal(Settings(outbound_allow=[]), url) is None


def test_the_operator_allow_list_opens_listed_hosts_and_networks():
    settings = Settings(outbound_allow=["10.20.0.0/16", "crm.internal", "127.0.0.1", "fd00::/8"])
    for url in (
        "http://10.20.1.2/",
        "http://crm.internal/",
        "http://CRM.internal./x",
        "http://127.0.0.1:9/",
        "http://2130706433/",
        "http://[fd12::1]/",
    ):
        assert outbound.url_refusal(settings, url) is None, url
    for url in (
        "http://10.21.0.1/",
        "http://127.0.0.2/",
        "http://localhost/",
        "http://other.internal.localhost/",
        "http://169.254.169.254/",
        "http://[::1]/",
    ):
        assert outbound.url_refusal(settings, url) is not None, url


async def test_requests_connect_only_to_vetted_addresses(trap, monkeypatch):
    """Names are resolved at request time and every answer vetted; the connection goes to the
    vetted address while Host keeps the name; redirects are not followed."""
    answers = {"tools.example": ["127.0.0.1"], "mixed.example": ["93.184.216.34", "127.0.0.1"]}

    async def resolve(host, port):
        return answers[host]

    monkeypatch.setattr(outbound, "resolve", resolve)
    trap.received.clear()
    closed = Settings(outbound_allow=[])
    for url in (
        trap.url("/a", "tools.example"),
        trap.url("/b", "mixed.example"),
        trap.url("/c", "2130706433"),
        trap.url("/d", "[::ffff:127.0.0.1]"),
        trap.url("/e", "localhost"),
    ):
        async with outbound.client(closed, 5) as client:
            with pytest.raises(httpx.ConnectError) as caught:
                await client.post(url, content=b"{}")
        assert outbound.refused(caught.value), url
    assert trap.received == []

    opened = Settings(outbound_allow=["127.0.0.1"])
    async with outbound.client(opened, 5) as client:
        answer = await client.post(trap.url("/pinned", "tools.example"), content=b"{}")
        redirected = await client.post(trap.url("/redirect", "tools.example"), content=b"{}")
    assert answer.status_code == 200 and redirected.status_code == 307
    assert [(r["path"], r["headers"]["Host"]) for r in trap.received] == [
        ("/pinned", f"tools.example:{trap.port}"),
        ("/redirect", f"tools.example:{trap.port}"),
    ]


# --- Item 3: against a server that allows no private address ---


@pytest.fixture(scope="module")
def narrowed(tmp_path_factory, scripted_llm, twilio_rest, trap):  # noqa: F811
    """A server that reaches no private address and dials only US/CA, serving agents stored
    while the operator allowed more (loopback tools and webhook, a GB transfer number)."""
    data_dir = tmp_path_factory.mktemp("narrowed")
    env = {
        **twilio_env(scripted_llm, twilio_rest),
        **(production_storage_env() if TEST_BACKEND == "postgres" else {}),
    }
    before = start_server(
        data_dir,
        preload=["scripted"],
        env={
            **env,
            "SWITCHBOARD_OUTBOUND_ALLOW": '["127.0.0.1"]',
            "SWITCHBOARD_DIAL_COUNTRIES": '["US", "CA", "GB"]',
        },
    )
    try:
        with before.client() as api:
            lookup = {
                "name": "lookup",
                "description": "Look it up",
                "type": "webhook",
                "url": trap.url("/tool"),
            }
            transfer = {
                "name": "transfer",
                "description": "Transfer",
                "type": "transfer_call",
                "phone_number": "+442071838750",
            }
            stored = make_agent(
                api,
                pipeline="scripted",
                tools=[lookup, transfer],
                webhook_url=trap.url("/events"),
                webhook_events=["session.started", "session.ended"],
                first_speaker="user",
            )
    finally:
        before.stop()
    after = start_server(
        data_dir,
        preload=["scripted"],
        env={
            **env,
            "SWITCHBOARD_OUTBOUND_ALLOW": "[]",
            "SWITCHBOARD_WEBHOOK_MAX_ATTEMPTS": "1",
        },
    )
    yield after, stored
    after.stop()


def test_private_urls_are_refused_when_stored(narrowed, trap):
    server, _stored = narrowed
    trap.received.clear()
    with server.client() as api:
        before = api.get("/v1/agents").json()["total"]
        agent = make_agent(api, pipeline="scripted")
        for url in (
            trap.url("/x"),
            trap.url("/x", "2130706433"),
            trap.url("/x", "[::ffff:127.0.0.1]"),
            trap.url("/x", "localhost"),
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00::1]/",
        ):
            base = {"name": "x", "voice_id": "joe", "system_prompt": "x", "pipeline": "scripted"}
            tool = {"name": "t", "description": "t", "type": "webhook", "url": url}
            invalid(
                api.post("/v1/agents", json={**base, "webhook_url": url}),
                ("webhook_url",),
                "url_not_allowed",
            )
            invalid(
                api.post("/v1/agents", json={**base, "tools": [tool]}),
                ("tools", 0, "url"),
                "url_not_allowed",
            )
            invalid(
                api.patch(f"/v1/agents/{agent['id']}", json={"webhook_url": url}),
                ("webhook_url",),
                "url_not_allowed",
            )
            invalid(
                api.patch(f"/v1/agents/{agent['id']}", json={"tools": [tool]}),
                ("tools", 0, "url"),
                "url_not_allowed",
            )
            inline = {
                "systemPrompt": "x",
                "voice": "joe",
                "language": "en",
                "greeting": "Hi",
                "pipeline": "scripted",
                "connectionType": "websocket",
                "tools": [tool],
            }
            invalid(
                api.post("/v1/calls/inline", json=inline), ("tools", 0, "url"), "url_not_allowed"
            )
        assert api.get("/v1/agents").json()["total"] == before + 1
        assert api.get(f"/v1/agents/{agent['id']}").json()["webhook_url"] is None
        assert api.get(f"/v1/agents/{agent['id']}").json()["tools"] == []
    assert trap.received == []


def _loopback_name() -> str | None:
    """A host name (not `localhost`) that this machine resolves to a loopback address, if any."""
    for name in ("vm", "runsc", socket.gethostname()):
        try:
            addresses = {
                info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
            }
        except OSError:
            continue
        if addresses and all(address.startswith("127.") for address in addresses):
            return name
    return None


async def test_stored_private_urls_are_refused_at_request_time(narrowed, trap, llm):
    """Tools and webhooks stored before the policy (or named by a host that resolves to
    loopback) reach nothing: the LLM and the transcript get an error, the delivery fails."""
    server, stored = narrowed
    trap.received.clear()
    with server.client() as api:
        agents, sessions = [stored], []
        name = _loopback_name()
        if name is not None:  # passes the check when stored, refused once resolved
            tool = {
                "name": "lookup",
                "description": "Look it up",
                "type": "webhook",
                "url": trap.url("/tool", name),
            }
            agents.append(make_agent(api, pipeline="scripted", tools=[tool]))
        for agent in agents:
            llm.script(ToolCall("lookup", {}), "I could not look that up.")
            async with SessionClient(agent_ws(server, agent["id"])) as client:
                ready = await client.wait_for("session.ready", timeout=30)
                await client.send_event({"type": "input.text", "text": "Look it up, please."})
                reply = await client.wait_for("transcript.agent", timeout=30)
                await client.send_event({"type": "session.end"})
                await client.wait_for("session.ended", timeout=10)
            assert reply["text"] == "I could not look that up."
            sessions.append(ready["session_id"])
            wait_for_status(api, ready["session_id"], "completed")
            items = api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
            [entry] = [json.loads(t["content"]) for t in items if t["speaker"] == "TOOL"]
            assert entry["result"] == {
                "error": "tool 'lookup' has an address the server may not reach"
            }
            assert "internal data" not in json.dumps(items)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            deliveries = [
                d
                for d in api.get(f"/v1/agents/{stored['id']}/webhook-deliveries").json()["items"]
                if d["session_id"] == sessions[0]
            ]
            if len(deliveries) == 2 and all(d["status"] == "failed" for d in deliveries):
                break
            await asyncio.sleep(0.2)
        assert sorted(d["event"] for d in deliveries) == ["session.ended", "session.started"]
        assert all(
            d["status"] == "failed" and "refused to connect" in d["last_error"] for d in deliveries
        ), deliveries
    assert trap.received == []


# --- Items 1 and 7: phone numbers ---


@pytest.fixture(scope="module")
def tenants(twilio_server):  # noqa: F811
    """Two accounts on the Twilio server, each with its own key."""
    clients = {}
    with twilio_server.client() as admin:
        for name in ("alpha", "beta"):
            account = admin.post("/v1/accounts", json={"name": name}).json()
            key = admin.post(
                "/v1/api-keys", json={"account_id": account["id"], "name": name}
            ).json()["secret"]
            clients[name] = httpx.Client(
                base_url=twilio_server.url, headers={"X-API-Key": key}, timeout=30
            )
    yield clients
    for client in clients.values():
        client.close()


def agent_body(**fields) -> dict:
    return {"name": "x", "voice_id": "joe", "system_prompt": "x", "pipeline": "scripted", **fields}


def test_a_number_belongs_to_one_account_and_answers_one_agent(twilio_server, tenants):  # noqa: F811
    alpha, beta = tenants["alpha"], tenants["beta"]
    number = "+14155550101"
    owner = make_agent(alpha, **agent_body(phone_numbers=[number]))

    # Another account claims it, spelled another way: 409, nothing stored.
    taken = refusal(
        beta.post("/v1/agents", json=agent_body(phone_numbers=["+1 415-555-0101"])),
        409,
        "phone_number_taken",
    )
    assert taken["details"] == {"field": "phone_numbers", "number": number}
    assert "phone_numbers" in taken["message"] and owner["id"] not in json.dumps(taken)
    assert beta.get("/v1/agents").json()["total"] == 0
    mine = make_agent(beta, **agent_body())
    refusal(
        beta.patch(f"/v1/agents/{mine['id']}", json={"phone_numbers": [number]}),
        409,
        "phone_number_taken",
    )
    assert beta.get(f"/v1/agents/{mine['id']}").json()["phone_numbers"] == []

    # Within the account, a number answers one agent.
    in_use = refusal(
        alpha.post("/v1/agents", json=agent_body(phone_numbers=[number])),
        409,
        "phone_number_in_use",
    )
    assert in_use["details"]["agent_id"] == owner["id"]
    assert alpha.get("/v1/agents").json()["total"] == 1

    # Inbound calls to the number reach the owner's agent, in the owner's account.
    form = {
        "CallSid": "CA" + "a" * 32,
        "AccountSid": ACCOUNT_SID,
        "From": CALLER,
        "To": number,
        "CallStatus": "ringing",
    }
    assert signed_post(twilio_server, "/v1/twilio/voice", form).status_code == 200
    assert alpha.get("/v1/sessions", params={"agent_id": owner["id"]}).json()["total"] == 1
    assert beta.get("/v1/sessions").json()["total"] == 0

    # Deleting the agent frees the number; then another account may take it.
    assert alpha.delete(f"/v1/agents/{owner['id']}").status_code == 200
    assert beta.patch(f"/v1/agents/{mine['id']}", json={"phone_numbers": [number]}).json()[
        "phone_numbers"
    ] == [number]
    assert (
        signed_post(
            twilio_server, "/v1/twilio/voice", {**form, "CallSid": "CA" + "b" * 32}
        ).status_code
        == 200
    )
    assert beta.get("/v1/sessions", params={"agent_id": mine["id"]}).json()["total"] == 1


def test_a_burst_of_claims_from_two_accounts_has_one_winner(tenants):
    number = "+14155550102"
    clients = [tenants["alpha"], tenants["beta"]] * 6

    def claim(client: httpx.Client) -> int:
        return client.post("/v1/agents", json=agent_body(phone_numbers=[number])).status_code

    with ThreadPoolExecutor(len(clients)) as pool:
        statuses = list(pool.map(claim, clients))
    assert sorted(statuses) == [201] + [409] * (len(clients) - 1), statuses
    holders = [
        a
        for c in tenants.values()
        for a in c.get("/v1/agents", params={"limit": 100}).json()["items"]
        if number in a["phone_numbers"]
    ]
    assert len(holders) == 1


def test_outbound_caller_id_must_be_the_callers_own(tenants, twilio_rest):  # noqa: F811
    alpha, beta = tenants["alpha"], tenants["beta"]
    make_agent(alpha, **agent_body(phone_numbers=["+14155550103"]))
    agent = make_agent(beta, **agent_body(phone_numbers=["+14155550104"]))
    placed = len(twilio_rest.created_calls())
    body = {"agentId": agent["id"], "to": "+14155550123", "from": "+14155550103"}
    forged = refusal(beta.post("/v1/calls/outbound", json=body), 403, "from_not_owned")
    assert forged["details"]["field"] == "from"
    unknown = {**body, "from": "+14155550199"}
    refusal(beta.post("/v1/calls/outbound", json=unknown), 403, "from_not_owned")
    assert len(twilio_rest.created_calls()) == placed
    assert beta.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["total"] == 0


NOT_DIALABLE = [
    "+442071838750",  # GB: not one of the server's countries
    "+18765551234",  # Jamaica shares +1, still not US/CA
    "+19005550123",  # US premium rate
    "+15550001111",  # not a valid number
    "sip:billing@pbx.example.com",  # SIP is off
]


def test_outbound_calls_and_transfers_dial_only_allowed_numbers(tenants, twilio_rest):  # noqa: F811
    beta = tenants["beta"]
    agent = make_agent(beta, **agent_body(phone_numbers=["+14155550105"]))
    agents_before = beta.get("/v1/agents").json()["total"]
    placed = len(twilio_rest.created_calls())
    for number in NOT_DIALABLE:
        invalid(
            beta.post("/v1/calls/outbound", json={"agentId": agent["id"], "to": number}),
            ("to",),
            "phone_number" if number.startswith("sip:") else "number_not_dialable",
        )
        tool = {
            "name": "transfer",
            "description": "Transfer",
            "type": "transfer_call",
            "phone_number": number,
        }
        invalid(
            beta.post("/v1/agents", json=agent_body(tools=[tool])),
            ("tools", 0, "phone_number"),
            "number_not_dialable",
        )
    for number in ("4155550123", "tel:+14155550123", "00441234", "+12", "+1415555012345678"):
        invalid(
            beta.post("/v1/calls/outbound", json={"agentId": agent["id"], "to": number}),
            ("to",),
            "phone_number",
        )
        invalid(
            beta.post("/v1/agents", json=agent_body(phone_numbers=[number])),
            ("phone_numbers", 0),
            "phone_number",
        )
    assert len(twilio_rest.created_calls()) == placed
    assert beta.get("/v1/agents").json()["total"] == agents_before
    assert beta.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["total"] == 0


async def test_a_transfer_to_a_number_no_longer_allowed_is_a_tool_error(narrowed, twilio_rest, llm):  # noqa: F811
    server, stored = narrowed
    llm.script(ToolCall("transfer", {}), "Sorry, I can't transfer you there.")
    with server.client() as api:
        response = api.post(
            "/v1/sessions/twilio",
            json={"agentId": stored["id"], "from": CALLER, "to": "+14155550106"},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 200, response.text
        twiml, session = response.json()["twiml"], response.json()["session"]
        async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
            await client.send_silence(1.0)
            await client.send_audio(
                speech("Please transfer me to the London office.", sample_rate=8000)
            )
            await client.send_silence(1.0)
            await client.wait_marks(1, timeout=60)
            await client.stop()
        wait_for_status(api, session["session_id"], "completed")
        items = api.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    [entry] = [json.loads(t["content"]) for t in items if t["speaker"] == "TOOL"]
    assert entry["result"]["error"].startswith("the transfer was refused: +442071838750 is in GB")
    assert items[-1]["content"] == "Sorry, I can't transfer you there."
    assert not [
        r
        for r in twilio_rest.requests
        if r.path.endswith(f"/Calls/{client.call_sid}.json") and r.value("Twiml")
    ]


# --- Item 8: secrets are shown once ---


def test_secrets_are_shown_once_then_only_their_last_four(twilio_server, tw, tenants, trap):  # noqa: F811
    alpha, beta = tw, tenants["beta"]
    tool = {
        "name": "lookup",
        "description": "Look it up",
        "type": "webhook",
        "url": trap.url("/tool"),
    }
    created = make_agent(alpha, **agent_body(webhook_url=trap.url("/events"), tools=[tool]))
    webhook_secret, tool_secret = created["webhook_secret"], created["tools"][0]["secret"]
    assert webhook_secret.startswith("whsec_") and tool_secret.startswith("whsec_")
    assert created["webhook_secret_last4"] == webhook_secret[-4:]

    reads = [
        alpha.get(f"/v1/agents/{created['id']}"),
        alpha.get("/v1/agents"),
        alpha.patch(f"/v1/agents/{created['id']}", json={"name": "renamed", "tools": [tool]}),
    ]
    for response in reads:
        assert response.status_code == 200, response.text
        assert webhook_secret not in response.text and tool_secret not in response.text
    read = reads[0].json()
    assert read["webhook_secret"] is None and read["webhook_secret_last4"] == webhook_secret[-4:]
    assert "secret" not in read["tools"][0] and read["tools"][0]["secret_last4"] == tool_secret[-4:]
    assert reads[2].json()["tools"][0]["secret_last4"] == tool_secret[-4:]  # saved without it: kept

    with logged_in(twilio_server) as page:
        edit = page.get(f"/agents/{created['id']}")
    assert (
        edit.status_code == 200 and tool_secret not in edit.text and webhook_secret not in edit.text
    )

    rotated = alpha.post(f"/v1/agents/{created['id']}/webhook-secret/rotate")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["webhook_secret"]
    assert new_secret.startswith("whsec_") and new_secret != webhook_secret
    after = alpha.get(f"/v1/agents/{created['id']}").json()
    assert after["webhook_secret"] is None and after["webhook_secret_last4"] == new_secret[-4:]
    refusal(beta.post(f"/v1/agents/{created['id']}/webhook-secret/rotate"), 404, "agent_not_found")
    plain = make_agent(alpha, **agent_body())
    refusal(alpha.post(f"/v1/agents/{plain['id']}/webhook-secret/rotate"), 409, "no_webhook")

    schema = httpx.get(f"{twilio_server.url}/openapi.json").json()
    assert "/v1/agents/{agent_id}/webhook-secret/rotate" in schema["paths"]
    assert "webhook_secret_last4" in schema["components"]["schemas"]["AgentOut"]["properties"]
    assert "secret_last4" in schema["components"]["schemas"]["ToolOut"]["properties"]


async def test_a_rotated_secret_signs_the_next_delivery(twilio_server, tw, llm, trap):  # noqa: F811
    server, api = twilio_server, tw
    trap.received.clear()
    agent = make_agent(api, pipeline="scripted", webhook_url=trap.url("/events"))
    first = agent["webhook_secret"]
    llm.script("We open at nine.")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        await client.wait_for("session.ready", timeout=30)
        deadline = time.monotonic() + 15
        while (
            not trap.received and time.monotonic() < deadline
        ):  # session.started, signed with the first
            await asyncio.sleep(0.1)
        second = api.post(f"/v1/agents/{agent['id']}/webhook-secret/rotate").json()[
            "webhook_secret"
        ]
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    deadline = time.monotonic() + 15
    while len(trap.received) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    signed = {
        json.loads(r["body"])["event"]: r
        for r in trap.received
        if json.loads(r["body"] or b"{}").get("agent_id") == agent["id"]
    }
    assert verify(first, signed["session.started"]) and not verify(
        second, signed["session.started"]
    )
    assert verify(second, signed["session.ended"]) and not verify(first, signed["session.ended"])
