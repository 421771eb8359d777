"""Limits (rate, body size, concurrent calls) and safe restarts (SIGTERM drain, kill -9 recovery)."""

import asyncio
import signal
import time

import httpx
import pytest

from app.client import SessionClient
from tests.fakes.carrier_webhooks import twilio_post
from tests.helpers.calls import agent_ws, refused
from tests.helpers.servers import make_agent, start_server

TWILIO_AUTH_TOKEN = "limits_test_twilio_token"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, scripted_llm):
    server = start_server(
        tmp_path_factory.mktemp("limited"),
        preload=["scripted"],  # loading models at the first call would hold up the next handshake
        env={
            "SWITCHBOARD_RATE_LIMIT_PER_MINUTE": "8",
            "SWITCHBOARD_MAX_BODY_BYTES": "4096",
            "SWITCHBOARD_MAX_CONCURRENT_CALLS": "1",
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
        },
    )
    yield server
    server.stop()


def test_rate_limit_answers_429_with_retry_after(limited_server):
    admin = limited_server.client()
    account = admin.post("/v1/accounts", json={"name": "chatty"}).json()
    key = admin.post("/v1/api-keys", json={"account_id": account["id"], "name": "k"}).json()[
        "secret"
    ]
    client = httpx.Client(base_url=limited_server.url, headers={"X-API-Key": key})
    statuses = [client.get("/v1/agents").status_code for _ in range(10)]
    assert statuses[:8] == [200] * 8 and statuses[8:] == [429, 429]
    refusal = client.get("/v1/agents")
    assert refusal.json()["code"] == "rate_limited"
    assert 1 <= int(refusal.headers["Retry-After"]) <= 60
    # Another key has its own window.
    other = admin.post("/v1/api-keys", json={"account_id": account["id"], "name": "k2"}).json()[
        "secret"
    ]
    assert (
        httpx.get(limited_server.url + "/v1/agents", headers={"X-API-Key": other}).status_code
        == 200
    )


def test_oversized_bodies_are_refused_with_413(limited_server):
    headers = {"X-API-Key": "sk_anyone", "Content-Type": "application/json"}
    big = b'{"name": "' + b"x" * 5000 + b'"}'
    response = httpx.post(limited_server.url + "/v1/agents", content=big, headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b"x" * 1000

    response = httpx.post(limited_server.url + "/v1/agents", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert httpx.get(limited_server.url + "/health").status_code == 200


async def test_call_over_the_account_cap_is_refused_while_the_first_carries_on(
    limited_server, scripted_llm
):
    scripted_llm.reset()
    scripted_llm.script("Still talking to you.")
    admin = limited_server.client()
    account = admin.post("/v1/accounts", json={"name": "capped"}).json()
    key = admin.post("/v1/api-keys", json={"account_id": account["id"], "name": "k"}).json()[
        "secret"
    ]
    api = httpx.Client(base_url=limited_server.url, headers={"X-API-Key": key})
    agent = make_agent(api, pipeline="scripted")
    async with SessionClient(agent_ws(limited_server, agent["id"], key=key)) as first:
        await first.wait_for("session.ready", timeout=60)
        second = await refused(agent_ws(limited_server, agent["id"], key=key))
        assert second.close_code == 4429
        assert second.of_type("session.error")[0]["code"] == "concurrent_call_limit"
        response = api.post(f"/v1/agents/{agent['id']}/sessions")
        assert response.status_code == 429 and response.json()["code"] == "concurrent_call_limit"
        assert response.headers["Retry-After"]
        # A phone call over the cap hears an apology and is hung up, never a dead line.
        twiml = twilio_post(
            f"{limited_server.url}/v1/twilio/voice?agentId={agent['id']}",
            {"CallSid": "CA" + "1" * 32, "From": "+15550001111", "To": "+15550002222"},
            TWILIO_AUTH_TOKEN,
        )
        assert twiml.status_code == 200 and twiml.headers["content-type"].startswith("text/xml")
        assert "<Say>" in twiml.text and "<Hangup" in twiml.text and "<Stream" not in twiml.text
        # An agent of the account with an overflow number sends the call there instead.
        staffed = make_agent(api, pipeline="scripted", overflow_number="+14155550199")
        overflowed = twilio_post(
            f"{limited_server.url}/v1/twilio/voice?agentId={staffed['id']}",
            {"CallSid": "CA" + "2" * 32, "From": "+15550001111", "To": "+15550002222"},
            TWILIO_AUTH_TOKEN,
        )
        assert overflowed.status_code == 200, overflowed.text
        assert "<Dial><Number>+14155550199</Number></Dial>" in overflowed.text
        # The first call is unaffected.
        await first.send_event({"type": "input.text", "text": "Are you still there?"})
        assert (await first.wait_for("transcript.agent", timeout=60))[
            "text"
        ] == "Still talking to you."
        await first.send_event({"type": "session.end"})
        await first.wait_for("session.ended", timeout=10)
    # Once it has ended there is room again (the session row is finalised just after the socket closes).
    deadline = time.monotonic() + 10
    while api.post(f"/v1/agents/{agent['id']}/sessions").status_code != 201:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


async def test_sigterm_drains_live_calls_with_a_goodbye(tmp_path, scripted_llm):
    scripted_llm.reset()
    scripted_llm.script("Noted, thank you.")
    data = tmp_path / "drain"
    server = start_server(
        data, env={"SWITCHBOARD_DRAIN_GRACE_SECS": "2", "SCRIPTED_LLM_URL": scripted_llm.url}
    )
    try:
        api = server.client()
        agent = make_agent(api, pipeline="scripted")
        async with SessionClient(agent_ws(server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=60)
            await client.send_event({"type": "input.text", "text": "Please note my order."})
            await client.wait_for("transcript.agent", timeout=60)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            # While draining: new calls are refused, the live one goes on.
            refusal = api.post(f"/v1/agents/{agent['id']}/sessions")
            assert refusal.status_code == 503 and refusal.headers["Retry-After"]
            assert api.get("/health").json()["status"] == "draining"
            ended = await client.wait_for("session.ended", timeout=30)
            assert ended["reason"] == "server_shutdown"
            goodbye = client.of_type("transcript.agent")[-1]["text"]
            assert "goodbye" in goodbye.lower()
            audio_after_sigterm = client.agent_audio
            assert len(audio_after_sigterm) > 16000  # the goodbye was spoken, not just announced
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert server.process.wait(60) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    session, transcript = after_restart(data, scripted_llm, ready["session_id"])
    assert (session["status"], session["end_reason"]) == ("completed", "server_shutdown")
    contents = [t["content"] for t in transcript]
    assert contents[:2] == ["Please note my order.", "Noted, thank you."]
    assert "goodbye" in contents[-1].lower()


async def test_kill_9_mid_call_then_restart_the_lost_node_s_call_ends_failed(
    tmp_path, scripted_llm
):
    scripted_llm.reset()
    scripted_llm.script("First answer.", "Second answer.")
    data = tmp_path / "crash"
    short_lease = {"SWITCHBOARD_NODE_HEARTBEAT_SECS": "0.5", "SWITCHBOARD_NODE_LEASE_SECS": "3"}
    server = start_server(data, env={"SCRIPTED_LLM_URL": scripted_llm.url, **short_lease})
    try:
        api = server.client()
        agent = make_agent(api, pipeline="scripted")
        async with SessionClient(agent_ws(server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=60)
            for count, text in enumerate(("One.", "Two."), start=1):
                await client.send_event({"type": "input.text", "text": text})
                await client.wait_for("transcript.agent", timeout=60, count=count)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
    finally:
        server.stop()
    # The restarted server is a new node: once the dead one's lease has run out, it ends that call.
    session, transcript = after_restart(
        data,
        scripted_llm,
        ready["session_id"],
        env=short_lease,
        until=lambda s: s["status"] != "active",
    )
    assert (session["status"], session["end_reason"]) == ("failed", "node_lost")
    assert [(t["speaker"], t["content"]) for t in transcript] == [
        ("USER", "One."),
        ("AGENT", "First answer."),
        ("USER", "Two."),
        ("AGENT", "Second answer."),
    ]


def after_restart(
    data, scripted_llm, session_id: str, env=None, until=lambda session: True
) -> tuple[dict, list[dict]]:
    """Start a server on the same data again; the session (once `until` holds for it, within 30 s)
    and its transcript as it now sees them."""
    server = start_server(data, env={"SCRIPTED_LLM_URL": scripted_llm.url, **(env or {})})
    try:
        api = server.client()
        deadline = time.monotonic() + 30
        session = api.get(f"/v1/sessions/{session_id}").json()
        while not until(session) and time.monotonic() < deadline:
            time.sleep(0.2)
            session = api.get(f"/v1/sessions/{session_id}").json()
        return session, api.get(f"/v1/sessions/{session_id}/transcript").json()["items"]
    finally:
        server.stop()
