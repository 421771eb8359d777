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


async def test_barge_in_sends_clear_and_cuts_the_agent_off(twilio_server, tw, llm):
    llm.script("Of course, go ahead.")
    agent = scripted_agent(
        tw, greeting="Welcome to the clinic. Our opening hours are nine to five on weekdays, "
                     "and ten to two on Saturdays. We are closed on Sundays and public holidays.",
    )
    twiml, session = twilio_session(tw, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_until(lambda: len(client.agent_audio) > 8000 * 0.5, 30, "greeting audio")
        await client.send_audio(speech("Sorry to interrupt, I have a question.", sample_rate=8000))
        await client.wait_until(lambda: client.events("clear"), 10, "clear")
        cleared_at = next(t for t, m in client.received if m.get("event") == "clear")
        await client.send_silence(1.0)
        await client.wait_marks(1, timeout=60)  # the greeting's mark went with the clear: this is the answer
        await client.stop()
        await client.wait_closed(timeout=5)
    # Twilio played well under the greeting's length before the clear.
    assert len(client.agent_audio) < 8000 * 12
    assert cleared_at - client._started < 10
    wait_for_status(tw, session["session_id"], "completed")
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    # The greeting was cut off early: it is in the transcript as interrupted, if at all.
    assert all(i["interrupted"] for i in items if i["speaker"] == "AGENT" and i["content"].startswith("Welcome"))
    assert any(i["speaker"] == "USER" and "question" in i["content"].lower() for i in items), items


async def test_keypad_press_reaches_the_agent_as_text(twilio_server, tw, llm):
    llm.script("You chose billing.")
    agent = scripted_agent(tw, greeting="Press 3 for billing.")
    twiml, session = twilio_session(tw, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_dtmf("3")
        await client.wait_marks(2, timeout=30)
        await client.stop()
        await client.wait_closed(timeout=5)
    messages = llm.requests[-1]["messages"]
    assert {"role": "user", "content": "The caller pressed 3."} in messages
    wait_for_status(tw, session["session_id"], "completed")
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    assert [(i["speaker"], i["content"]) for i in items] == [
        ("AGENT", "Press 3 for billing."), ("USER", "The caller pressed 3."), ("AGENT", "You chose billing."),
    ]


async def test_agent_ends_the_call_and_hangs_up_after_the_goodbye(twilio_server, tw, twilio_rest, llm):
    llm.script("We open at nine.")
    agent = scripted_agent(tw, greeting="Hello.", max_turns=1)
    twiml, session = twilio_session(tw, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_audio(speech("When do you open?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)
        await client.send_audio(speech("And when do you close?", sample_rate=8000))
        await client.send_silence(1.0)
        hang_up = await asyncio.to_thread(twilio_rest.wait_for_hang_up, client.call_sid, 60)
        await client.wait_closed(timeout=10)
    assert (hang_up.username, hang_up.password) == (ACCOUNT_SID, AUTH_TOKEN)
    assert hang_up.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{client.call_sid}.json"
    # The goodbye was sent in full before the hang-up.
    goodbye_mark = client.events("mark")[-1]
    assert goodbye_mark["mark"]["name"] == "utterance-3"
    last_media_bytes = len(client.agent_audio)
    assert last_media_bytes > 8000 * 2
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "max_turns"
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    assert items[-1]["speaker"] == "AGENT" and "goodbye" in items[-1]["content"].lower()
    wait_no_calls(twilio_server)
