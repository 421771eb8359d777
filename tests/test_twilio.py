"""Phone calls over Twilio, end to end: real server, real Media Streams WebSocket, Piper caller speech.

The server runs with Twilio credentials pointed at a local stand-in for Twilio's REST
API, so hang-ups and outbound calls are recorded rather than sent.
"""

import asyncio
import time
from datetime import datetime

import httpx
import pytest
from twilio.request_validator import RequestValidator

from app.calls.tokens import TokenSigner
from tests.audio import rms, speech
from tests.conftest import make_agent, start_server
from tests.fakes.twilio_client import TwilioMediaStreamsClient, parse_twiml, ulaw_decode
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.test_session_websocket import wait_for_status

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio_test_auth_token"
SECRET = "relay-token-test-secret"
CALLER, NUMBER = "+15550001111", "+15550002222"


@pytest.fixture(scope="module")
def twilio_rest():
    fake = FakeTwilioRest(ACCOUNT_SID, AUTH_TOKEN).start()
    yield fake
    fake.stop()


def twilio_env(scripted_llm, twilio_rest) -> dict[str, str]:
    return {
        "SCRIPTED_LLM_URL": scripted_llm.url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_rest.url,
        "SWITCHBOARD_SECRET_KEY": SECRET,
    }


@pytest.fixture(scope="module")
def twilio_server(tmp_path_factory, scripted_llm, twilio_rest):
    """A server with Twilio credentials (signature checks on) and a known token secret."""
    server = start_server(
        tmp_path_factory.mktemp("twilio"), preload=["scripted"], env=twilio_env(scripted_llm, twilio_rest)
    )
    yield server
    server.stop()


@pytest.fixture
def tw(twilio_server):
    with twilio_server.client() as client:
        yield client


def scripted_agent(api, **fields) -> dict:
    return make_agent(api, pipeline="scripted", **fields)


def twilio_session(api, agent_id: str, **fields) -> tuple[str, dict]:
    """TwiML and session for a call, as an API client gets them."""
    response = api.post(
        "/v1/sessions/twilio", json={"agentId": agent_id, "from": CALLER, "to": NUMBER, **fields},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()["twiml"], response.json()["session"]


def signed_post(server, path: str, form: dict[str, str], token: str = AUTH_TOKEN) -> httpx.Response:
    url = server.url + path
    signature = RequestValidator(token).compute_signature(url, form)
    return httpx.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=30)


def active_calls(server) -> int:
    return httpx.get(f"{server.url}/health", timeout=10).json()["active_calls"]


def wait_no_calls(server, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while active_calls(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert active_calls(server) == 0


async def test_inbound_call_hears_the_caller_answers_and_completes(twilio_server, tw, llm):
    llm.script("We open at nine tomorrow morning.")
    agent = scripted_agent(tw, greeting="Hello, you have reached the clinic.")
    response = tw.post("/v1/sessions/twilio", json={"agentId": agent["id"], "from": CALLER, "to": NUMBER})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    stream_url, parameters = parse_twiml(response.text)
    assert stream_url == twilio_server.ws_url("/v1/sessions/twilio/stream") and set(parameters) == {"token"}
    session_id = tw.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"][0]["session_id"]

    async with TwilioMediaStreamsClient(stream_url, parameters) as client:
        await client.wait_marks(1, timeout=30)  # the greeting has played
        greeting = ulaw_decode(bytes(client.agent_audio))
        assert len(greeting) > 8000 * 2 * 1.0 and rms(greeting) > 300
        assert client.events("mark")[0]["mark"]["name"] == "utterance-1"
        assert tw.get(f"/v1/sessions/{session_id}").json()["status"] == "active"

        await client.send_audio(speech("What time do you open tomorrow morning?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)  # the answer has played
        reply = ulaw_decode(bytes(client.agent_audio)[len(greeting) // 2:])
        assert len(reply) > 8000 * 2 * 0.5 and rms(reply) > 300

        await client.stop()
        stopped = time.monotonic()
        await client.wait_closed(timeout=5)
        assert client.closed_at - stopped < 1.0

    session = wait_for_status(tw, session_id, "completed")
    assert session["end_reason"] == "caller_hangup" and session["connection_type"] == "twilio"
    wait_no_calls(twilio_server, timeout=1)
    items = tw.get(f"/v1/sessions/{session_id}/transcript").json()["items"]
    assert [i["speaker"] for i in items] == ["AGENT", "USER", "AGENT"], items
    assert items[0]["content"] == "Hello, you have reached the clinic."
    assert "open" in items[1]["content"].lower() and "tomorrow" in items[1]["content"].lower()
    assert items[2]["content"] == "We open at nine tomorrow morning."
    # Agent turns are stamped when Twilio echoed their mark (the caller had heard them).
    for entry, (_name, echoed_at) in zip([items[0], items[2]], client.marks_echoed):
        assert abs(datetime.fromisoformat(entry["timestamp"]).timestamp() - echoed_at) < 0.5
    # Caller hung up: no REST hang-up needed.
    assert not twilio_rest_hang_ups(twilio_server, client.call_sid)


def twilio_rest_hang_ups(server, call_sid: str) -> bool:
    return f"Successfully terminated Twilio call {call_sid}" in server.log()
