"""Load shedding: a worker at `SWITCHBOARD_MAX_CALLS_PER_WORKER` (or above its load threshold)
refuses new calls on every entry point before they start, while its live calls keep time."""

import asyncio
import itertools
import time

import httpx
import pytest

from app.client import SessionClient
from tests.fakes.carrier_webhooks import plivo_post, twilio_post
from tests.helpers.calls import AUDIO_OFFER, agent_ws, refused
from tests.helpers.servers import make_agent, start_server

TWILIO_AUTH_TOKEN = "load_shedding_twilio_token"
PLIVO_AUTH_TOKEN = "load_shedding_plivo_token"
OVERFLOW = "+14155550199"
REPLY = "Your order left our warehouse this morning and should reach you by Thursday afternoon."
MAX_STRETCH = 1.25
"""How much longer than its own duration the agent's reply may take to arrive: the frames keep
their pace (a shared test machine makes single gaps too noisy to bound tightly)."""


@pytest.fixture(scope="module")
def full_server(tmp_path_factory, scripted_llm):
    server = start_server(
        tmp_path_factory.mktemp("full"),
        preload=["scripted"],
        env={
            "SWITCHBOARD_MAX_CALLS_PER_WORKER": "2",
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
            "PLIVO_AUTH_TOKEN": PLIVO_AUTH_TOKEN,
        },
    )
    yield server
    server.stop()


async def _outcome(client: SessionClient) -> str:
    """`ready` or `refused` (the socket closed first): what the server answered a new session."""
    try:
        await client.wait_for("session.ready", timeout=30)
        return "ready"
    except ConnectionError:
        return "refused"


def _assert_keeps_time(client: SessionClient, start: float) -> None:
    """The reply's frames arrive at their normal pace: the median gap is one frame's length,
    and the whole reply arrives in about its own duration."""
    frames = [(at, size) for at, size in client.audio_log if at >= start]
    assert len(frames) > 50, len(frames)  # a few seconds of speech
    frame_secs = frames[0][1] / 2 / client.sample_rate
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(frames))
    spoken = sum(size for _, size in frames[:-1]) / 2 / client.sample_rate
    stretch = (frames[-1][0] - frames[0][0]) / spoken
    assert gaps[len(gaps) // 2] <= 1.5 * frame_secs, f"median gap {gaps[len(gaps) // 2]:.3f}s"
    assert stretch <= MAX_STRETCH, f"{spoken:.2f}s of speech took {stretch:.2f}x as long"


def _assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "server_busy" and body["details"]["limit"] == 2, body
    assert int(response.headers["Retry-After"]) > 0


async def test_a_full_worker_refuses_a_burst_on_every_entry_point_while_live_calls_keep_time(
    full_server, scripted_llm
):
    scripted_llm.reset()
    scripted_llm.script(REPLY, REPLY)
    api = full_server.client()
    agent = make_agent(api, pipeline="scripted")
    staffed = make_agent(api, pipeline="scripted", overflow_number=OVERFLOW)
    assert staffed["overflow_number"] == OVERFLOW
    assert api.get("/health").json()["accepting"] is True

    # Five calls at once on an empty worker: exactly its two places are taken.
    clients = [SessionClient(agent_ws(full_server, agent["id"])) for _ in range(5)]
    await asyncio.gather(*(client.__aenter__() for client in clients))
    try:
        outcomes = await asyncio.gather(*(_outcome(client) for client in clients))
        live = [c for c, outcome in zip(clients, outcomes, strict=True) if outcome == "ready"]
        assert len(live) == 2, outcomes
        for client in clients:
            if client not in live:
                await client.close()
                assert client.close_code == 1013, (client.close_code, client.close_reason)
                assert client.of_type("session.error")[0]["code"] == "server_busy"
        health = api.get("/health").json()
        assert (health["accepting"], health["live_calls"]) == (False, 2)

        # The live calls talk while new calls arrive on every entry point.
        asked_at = asyncio.get_running_loop().time()
        for client in live:
            await client.send_event({"type": "input.text", "text": "Where is my order?"})

        def rest_session():
            return api.post(f"/v1/agents/{agent['id']}/sessions")

        def webrtc_offer():
            return api.post(
                f"/v1/agents/{agent['id']}/webrtc/offer", json={"sdp": AUDIO_OFFER, "type": "offer"}
            )

        def twilio_call(n: int, agent_id: str = agent["id"]):
            return twilio_post(
                f"{full_server.url}/v1/twilio/voice?agentId={agent_id}",
                {"CallSid": f"CA{n:032d}", "From": "+15550001111", "To": "+15550002222"},
                TWILIO_AUTH_TOKEN,
            )

        def plivo_call(n: int):
            return plivo_post(
                f"{full_server.url}/v1/plivo/voice?agentId={staffed['id']}",
                {"CallUUID": f"call-{n}", "From": "+15550001111", "To": "+15550002222"},
                PLIVO_AUTH_TOKEN,
            )

        burst = await asyncio.gather(
            *(refused(agent_ws(full_server, agent["id"])) for _ in range(3)),
            *(asyncio.to_thread(rest_session) for _ in range(2)),
            *(asyncio.to_thread(webrtc_offer) for _ in range(2)),
            *(asyncio.to_thread(twilio_call, n) for n in range(2)),
            *(asyncio.to_thread(twilio_call, n, staffed["id"]) for n in range(2, 4)),
            *(asyncio.to_thread(plivo_call, n) for n in range(2)),
        )
        sockets, sessions, offers = burst[:3], burst[3:5], burst[5:7]
        phone_calls, overflowed, plivo_overflowed = burst[7:9], burst[9:11], burst[11:]
        for client in sockets:
            assert client.close_code == 1013
            assert client.of_type("session.error")[0]["code"] == "server_busy"
        for response in [*sessions, *offers]:
            _assert_busy(response)
        for response in phone_calls:
            assert response.status_code == 200, response.text
            assert '<Reject reason="busy"' in response.text and "<Stream" not in response.text
        # An agent with an overflow number sends the calls it can't take there.
        for response in [*overflowed, *plivo_overflowed]:
            assert response.status_code == 200, response.text
            assert f"<Dial><Number>{OVERFLOW}</Number></Dial>" in response.text, response.text
            assert "<Stream" not in response.text

        # Both live calls answer, their audio paced as ever.
        for client in live:
            assert (await client.wait_for("transcript.agent", timeout=60))["text"] == REPLY
            await client.wait_for("agent.speech.stopped", timeout=60)
        for client in live:
            _assert_keeps_time(client, asked_at)
        for client in live:
            await client.send_event({"type": "session.end"})
            await client.wait_for("session.ended", timeout=10)
    finally:
        for client in clients:
            await client.close()
    # The places are free again once the calls have ended.
    for _ in range(50):
        if api.get("/health").json()["live_calls"] == 0:
            break
        await asyncio.sleep(0.2)
    health = api.get("/health").json()
    assert (health["accepting"], health["live_calls"]) == (True, 0)
    assert api.post(f"/v1/agents/{agent['id']}/sessions").status_code == 201


def test_a_worker_above_its_load_threshold_refuses_new_calls(tmp_path, scripted_llm):
    server = start_server(
        tmp_path / "loaded",
        preload=["scripted"],
        env={
            "SWITCHBOARD_LOAD_THRESHOLD": "0.000001",  # any measurable work is above it
            "SWITCHBOARD_NODE_HEARTBEAT_SECS": "0.2",
            "SCRIPTED_LLM_URL": scripted_llm.url,
        },
    )
    try:
        api = server.client()
        agent = make_agent(api, pipeline="scripted")
        # The idle loop's share over one heartbeat can round to 0; the polling itself is work.
        for _ in range(100):
            health = api.get("/health").json()
            if health["load"] > 0.000001:
                break
            time.sleep(0.05)
        assert health["load"] > 0.000001 and health["accepting"] is False, health
        response = api.post(f"/v1/agents/{agent['id']}/sessions")
        assert response.status_code == 503 and response.json()["code"] == "server_busy"
        assert "too busy" in response.json()["message"] and response.headers["Retry-After"]
    finally:
        server.stop()


def test_openapi_documents_busy_refusals_and_health(full_server):
    spec = httpx.get(full_server.url + "/openapi.json").json()
    busy = spec["paths"]["/v1/agents/{agent_id}/sessions"]["post"]["responses"]["503"]
    assert "Retry-After" in busy["headers"]
    body = busy["content"]["application/json"]
    assert (
        body["schema"]["$ref"].endswith("/ErrorBody") and body["example"]["code"] == "server_busy"
    )
    health = spec["components"]["schemas"]["Health"]
    assert {"load", "accepting"} <= set(health["required"])
