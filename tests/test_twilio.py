"""Phone calls over Twilio, end to end: real server, real Media Streams WebSocket, Piper caller speech.

The server runs with Twilio credentials pointed at a local stand-in for Twilio's REST
API, so hang-ups and outbound calls are recorded rather than sent.
"""

import asyncio
import base64
import json
import time
from datetime import datetime
from xml.etree import ElementTree

import httpx
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.calls.tokens import TokenSigner
from tests.audio import rms, speech
from tests.fakes.twilio_client import (
    TwilioMediaStreamsClient,
    parse_twiml,
    ulaw_decode,
    ulaw_encode,
)
from tests.helpers.calls import wait_for_status
from tests.helpers.servers import make_agent, scripted_agent, start_server
from tests.helpers.twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALLER,
    NUMBER,
    SECRET,
    signed_post,
    twilio_env,
    twilio_session,
)


def active_calls(server) -> int:
    return httpx.get(f"{server.url}/health", timeout=10).json()["live_calls"]


def wait_no_calls(server, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while active_calls(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert active_calls(server) == 0


async def test_inbound_call_hears_the_caller_answers_and_completes(
    twilio_server, tw, twilio_rest, llm
):
    llm.script("We open at nine tomorrow morning.")
    agent = scripted_agent(tw, greeting="Hello, you have reached the clinic.")
    response = tw.post(
        "/v1/sessions/twilio", json={"agentId": agent["id"], "from": CALLER, "to": NUMBER}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    stream_url, parameters = parse_twiml(response.text)
    assert stream_url == twilio_server.ws_url("/v1/sessions/twilio/stream") and set(parameters) == {
        "token"
    }
    session_id = tw.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"][0][
        "session_id"
    ]

    async with TwilioMediaStreamsClient(stream_url, parameters) as client:
        await client.wait_marks(1, timeout=30)  # the greeting has played
        greeting = ulaw_decode(bytes(client.agent_audio))
        assert len(greeting) > 8000 * 2 * 1.0 and rms(greeting) > 300
        assert client.events("mark")[0]["mark"]["name"] == "utterance-1"
        assert tw.get(f"/v1/sessions/{session_id}").json()["status"] == "active"

        await client.send_audio(speech("What time do you open tomorrow morning?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)  # the answer has played
        reply = ulaw_decode(bytes(client.agent_audio)[len(greeting) // 2 :])
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
    for entry, (_name, echoed_at) in zip([items[0], items[2]], client.marks_echoed, strict=False):
        assert abs(datetime.fromisoformat(entry["timestamp"]).timestamp() - echoed_at) < 0.5
    # Caller hung up: no REST hang-up needed.
    assert not twilio_rest.hang_ups(client.call_sid)


async def test_barge_in_sends_clear_and_cuts_the_agent_off(twilio_server, tw, llm):
    llm.script("Of course, go ahead.")
    agent = scripted_agent(
        tw,
        greeting="Welcome to the clinic. Our opening hours are nine to five on weekdays, "
        "and ten to two on Saturdays. We are closed on Sundays and public holidays.",
    )
    twiml, session = twilio_session(tw, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_until(lambda: len(client.agent_audio) > 8000 * 0.5, 30, "greeting audio")
        await client.send_audio(speech("Sorry to interrupt, I have a question.", sample_rate=8000))
        await client.wait_until(lambda: client.events("clear"), 10, "clear")
        cleared_at = next(t for t, m in client.received if m.get("event") == "clear")
        await client.send_silence(1.0)
        await client.wait_marks(
            1, timeout=60
        )  # the greeting's mark went with the clear: this is the answer
        await client.stop()
        await client.wait_closed(timeout=5)
    # Twilio played well under the greeting's length before the clear.
    assert len(client.agent_audio) < 8000 * 12
    assert cleared_at - client._started < 10
    wait_for_status(tw, session["session_id"], "completed")
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    # The greeting was cut off early: it is in the transcript as interrupted, if at all.
    assert all(
        i["interrupted"]
        for i in items
        if i["speaker"] == "AGENT" and i["content"].startswith("Welcome")
    )
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
    assert any(
        {"role": "user", "content": "The caller pressed 3."} in r["messages"] for r in llm.requests
    )
    wait_for_status(tw, session["session_id"], "completed")
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    assert [(i["speaker"], i["content"]) for i in items] == [
        ("AGENT", "Press 3 for billing."),
        ("USER", "The caller pressed 3."),
        ("AGENT", "You chose billing."),
    ]


async def test_agent_ends_the_call_and_hangs_up_after_the_goodbye(
    twilio_server, tw, twilio_rest, llm
):
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
    # The goodbye was sent in full (its mark follows its last audio) before the hang-up.
    goodbye_sent_at, audio_before_goodbye_mark = client.marks_received["utterance-3"]
    goodbye = ulaw_decode(
        bytes(
            client.agent_audio[client.marks_received["utterance-2"][1] : audio_before_goodbye_mark]
        )
    )
    assert len(goodbye) > 8000 * 2 * 1.0 and rms(goodbye) > 300
    assert goodbye_sent_at <= hang_up.at
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "max_turns"
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    assert items[-1]["speaker"] == "AGENT" and "goodbye" in items[-1]["content"].lower()
    wait_no_calls(twilio_server)


# --- Refusals: each closes with a code and reason, logs why, and leaves nothing running ---


def relay_claims(session: dict, **overrides) -> dict:
    return {
        "agt": session["agent_id"],
        "sid": session["session_id"],
        "inst": None,
        "acc": "acc_default",
        "jti": f"jti-{time.monotonic_ns()}",
        **overrides,
    }


async def assert_refused(
    server, api, session: dict, parameters: dict, code: str, reason: str
) -> None:
    client = TwilioMediaStreamsClient(server.ws_url("/v1/sessions/twilio/stream"), parameters)
    async with client:
        await client.wait_closed(timeout=15)
    assert (client.close_code, client.close_reason) == (4401, reason)
    assert client.media_messages == 0
    assert f"twilio stream refused ({code}): {reason}" in server.log()
    assert active_calls(server) == 0
    assert api.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "created"


async def test_stream_without_token_is_refused(twilio_server, tw):
    _twiml, session = twilio_session(tw, scripted_agent(tw)["id"])
    await assert_refused(
        twilio_server,
        tw,
        session,
        {},
        "missing_token",
        "the stream's start message carries no relay token",
    )


async def test_forged_token_is_refused(twilio_server, tw):
    _twiml, session = twilio_session(tw, scripted_agent(tw)["id"])
    forged = TokenSigner("not-the-server-secret").issue(
        "relay", relay_claims(session), time.time() + 600
    )
    await assert_refused(
        twilio_server,
        tw,
        session,
        {"token": forged},
        "invalid_token",
        "relay token refused: bad token signature",
    )


async def test_expired_token_is_refused(twilio_server, tw):
    _twiml, session = twilio_session(tw, scripted_agent(tw)["id"])
    expired = TokenSigner(SECRET).issue("relay", relay_claims(session), time.time() - 5)
    await assert_refused(
        twilio_server,
        tw,
        session,
        {"token": expired},
        "invalid_token",
        "relay token refused: token expired",
    )


async def test_replayed_token_is_refused_even_after_a_restart(tmp_path, scripted_llm, twilio_rest):
    env = twilio_env(scripted_llm, twilio_rest)
    server = start_server(tmp_path / "replay", env=env)
    try:
        with server.client() as api:
            twiml, session = twilio_session(api, scripted_agent(api, greeting="Hi.")["id"])
            async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
                await client.wait_marks(1, timeout=60)
                await client.stop()
                await client.wait_closed(timeout=5)
            wait_for_status(api, session["session_id"], "completed")
            replay = TwilioMediaStreamsClient.from_twiml(twiml)
            async with replay:
                await replay.wait_closed(timeout=15)
            assert (replay.close_code, replay.close_reason) == (
                4401,
                "relay token refused: it was already used",
            )
        server.stop()
        server = start_server(tmp_path / "replay", env=env, port=int(server.url.rsplit(":", 1)[1]))
        replay = TwilioMediaStreamsClient.from_twiml(twiml)
        async with replay:
            await replay.wait_closed(timeout=15)
        assert (replay.close_code, replay.close_reason) == (
            4401,
            "relay token refused: it was already used",
        )
        assert "twilio stream refused (token_used)" in server.log()
        assert active_calls(server) == 0
    finally:
        server.stop()


def test_voice_webhook_refuses_a_bad_signature(twilio_server, tw):
    agent = scripted_agent(tw, phone_numbers=["+15550003333"])
    form = {
        "CallSid": "CA" + "2" * 32,
        "From": CALLER,
        "To": "+15550003333",
        "CallStatus": "ringing",
    }
    unsigned = httpx.post(f"{twilio_server.url}/v1/twilio/voice", data=form, timeout=30)
    assert unsigned.status_code == 403 and unsigned.json()["code"] == "invalid_signature"
    forged = signed_post(twilio_server, "/v1/twilio/voice", form, token="someone-elses-token")
    assert forged.status_code == 403 and forged.json()["message"] == "invalid X-Twilio-Signature"
    tampered = httpx.post(
        f"{twilio_server.url}/v1/twilio/voice",
        data={**form, "To": "+15550004444"},
        timeout=30,
        headers={
            "X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(
                f"{twilio_server.url}/v1/twilio/voice", form
            )
        },
    )
    assert tampered.status_code == 403
    assert (
        "refused Twilio webhook /v1/twilio/voice: invalid X-Twilio-Signature" in twilio_server.log()
    )
    assert tw.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["total"] == 0
    valid = signed_post(twilio_server, "/v1/twilio/voice", form)
    assert valid.status_code == 200 and parse_twiml(valid.text)[1].keys() == {"token"}


# --- The number webhook and status callbacks ---


async def test_voice_webhook_routes_by_number_and_status_callbacks_follow_the_call(
    twilio_server, tw
):
    agent = scripted_agent(tw, greeting="Thanks for calling.", phone_numbers=["+15550005555"])
    call_sid = "CA" + "5" * 32
    form = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": CALLER,
        "To": "+15550005555",
        "CallStatus": "ringing",
    }
    answer = signed_post(twilio_server, "/v1/twilio/voice", form)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml"), (
        answer.text
    )
    session_id = tw.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"][0][
        "session_id"
    ]

    def status(value: str) -> httpx.Response:
        response = signed_post(twilio_server, "/v1/twilio/status", {**form, "CallStatus": value})
        assert response.status_code == 204, response.text
        return response

    status("ringing")
    assert tw.get(f"/v1/sessions/{session_id}").json()["status"] == "created"
    status("in-progress")
    assert tw.get(f"/v1/sessions/{session_id}").json()["status"] == "active"
    async with TwilioMediaStreamsClient.from_twiml(answer.text, call_sid=call_sid) as client:
        await client.wait_marks(1, timeout=30)
        await client.stop()
        await client.wait_closed(timeout=5)
    wait_for_status(tw, session_id, "completed")
    status("completed")
    assert tw.get(f"/v1/sessions/{session_id}").json()["end_reason"] == "caller_hangup"

    unknown = signed_post(twilio_server, "/v1/twilio/voice", {**form, "To": "+15550009999"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "number_not_assigned"
    # Longer than the call row can hold (PostgreSQL refuses it where SQLite stored it): a 422, not a 500.
    for field in ("From", "CallSid"):
        overlong = signed_post(
            twilio_server, "/v1/twilio/voice", {**form, field: "sip:" + "x" * 80}
        )
        assert overlong.status_code == 422 and overlong.json()["code"] == "validation_error", (
            overlong.text
        )


def test_busy_call_fails_its_session(twilio_server, tw):
    agent = scripted_agent(tw, phone_numbers=["+15550006666"])
    form = {
        "CallSid": "CA" + "6" * 32,
        "From": CALLER,
        "To": "+15550006666",
        "CallStatus": "ringing",
    }
    assert (
        signed_post(twilio_server, f"/v1/twilio/voice?agentId={agent['id']}", form).status_code
        == 200
    )
    session_id = tw.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"][0][
        "session_id"
    ]
    assert (
        signed_post(twilio_server, "/v1/twilio/status", {**form, "CallStatus": "busy"}).status_code
        == 204
    )
    session = tw.get(f"/v1/sessions/{session_id}").json()
    assert (session["status"], session["end_reason"]) == ("failed", "busy")


# --- Outbound ---


async def test_outbound_call_through_twilio_rest(twilio_server, tw, twilio_rest):
    agent = scripted_agent(
        tw,
        greeting="Hi, this is the clinic calling about your appointment.",
        phone_numbers=["+15550007777"],
    )
    created = tw.post("/v1/calls/outbound", json={"agentId": agent["id"], "to": "+14155551212"})
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["direction"] == "outbound" and task["call_sid"].startswith("CA")
    request = twilio_rest.created_calls()[-1]
    assert (request.username, request.password) == (ACCOUNT_SID, AUTH_TOKEN)
    assert request.value("To") == "+14155551212" and request.value("From") == "+15550007777"
    assert (
        request.value("Url") == f"{twilio_server.url}/v1/sessions/twilio/task/{task['id']}/connect"
    )
    assert (
        request.value("StatusCallback")
        == f"{twilio_server.url}/v1/sessions/twilio/task/{task['id']}/status"
    )

    # Twilio: the callee answered; fetch the TwiML, join the stream.
    form = {
        "CallSid": task["call_sid"],
        "AccountSid": ACCOUNT_SID,
        "From": "+15550007777",
        "To": "+14155551212",
        "CallStatus": "in-progress",
        "Direction": "outbound-api",
    }
    path = request.value("Url").removeprefix(twilio_server.url)
    answer = signed_post(twilio_server, path, form)
    assert answer.status_code == 200, answer.text
    status_path = request.value("StatusCallback").removeprefix(twilio_server.url)
    assert signed_post(twilio_server, status_path, form).status_code == 204
    async with TwilioMediaStreamsClient.from_twiml(
        answer.text, call_sid=task["call_sid"]
    ) as client:
        await client.wait_marks(1, timeout=30)  # the agent spoke first, unprompted
        assert rms(ulaw_decode(bytes(client.agent_audio))) > 300
        assert tw.delete(f"/v1/agents/{agent['id']}").status_code == 200  # ends the call
        hang_up = await asyncio.to_thread(twilio_rest.wait_for_hang_up, task["call_sid"], 15)
        await client.wait_closed(timeout=5)
    assert (hang_up.username, hang_up.password) == (ACCOUNT_SID, AUTH_TOKEN)
    session = wait_for_status(tw, task["session_id"], "completed")
    assert (
        session["end_reason"] == "agent_deleted" and session["metadata"]["direction"] == "outbound"
    )
    assert (
        signed_post(twilio_server, status_path, {**form, "CallStatus": "completed"}).status_code
        == 204
    )
    assert tw.get(f"/v1/calls/{task['id']}").json()["status"] == "completed"
    wait_no_calls(twilio_server)


def test_outbound_call_refused_by_twilio_fails_cleanly(twilio_server, tw, twilio_rest):
    agent = scripted_agent(tw)
    missing_from = tw.post(
        "/v1/calls/outbound", json={"agentId": agent["id"], "to": "+14155551212"}
    )
    assert missing_from.status_code == 422 and missing_from.json()["code"] == "missing_from"
    assert (
        tw.patch(f"/v1/agents/{agent['id']}", json={"phone_numbers": ["+15550008888"]}).status_code
        == 200
    )
    original = twilio_rest.auth_token
    twilio_rest.auth_token = "rotated"  # Twilio now rejects our credentials
    try:
        refused = tw.post("/v1/calls/outbound", json={"agentId": agent["id"], "to": "+14155551212"})
    finally:
        twilio_rest.auth_token = original
    assert refused.status_code == 502 and refused.json()["code"] == "twilio_error"
    session = tw.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"][0]
    assert (session["status"], session["end_reason"]) == ("failed", "call_failed")


# --- Agent instances fill {{placeholders}} ---


async def test_a_stream_refused_once_its_token_is_used_ends_the_session(twilio_server, tw):
    """A stream that reaches a paused agent is refused, and its session ends there: nothing is
    left waiting for the carrier's callbacks (a node would leave a call whose stream opened)."""
    agent = scripted_agent(tw, greeting="Hi.")
    twiml, session = twilio_session(tw, agent["id"])
    burst_twiml, burst_session = twilio_session(tw, agent["id"])
    assert tw.patch(f"/v1/agents/{agent['id']}", json={"status": "paused"}).status_code == 200
    client = TwilioMediaStreamsClient.from_twiml(twiml)
    async with client:
        await client.wait_closed(timeout=15)
    assert (client.close_code, client.close_reason) == (4409, f"agent '{agent['id']}' is paused")
    assert client.media_messages == 0
    ended = tw.get(f"/v1/sessions/{session['session_id']}").json()
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_paused")

    # A burst of streams on one token: one uses it (and is refused for the paused agent), the
    # others are refused as replays; the session ends once.
    burst = [TwilioMediaStreamsClient.from_twiml(burst_twiml) for _ in range(8)]
    await asyncio.gather(*(c.__aenter__() for c in burst))
    try:
        await asyncio.gather(*(c.wait_closed(timeout=15) for c in burst))
    finally:
        await asyncio.gather(*(c.__aexit__(None, None, None) for c in burst))
    codes = sorted(c.close_code for c in burst)
    assert codes == [4401] * 7 + [4409], [(c.close_code, c.close_reason) for c in burst]
    ended = tw.get(f"/v1/sessions/{burst_session['session_id']}").json()
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_paused")


async def test_instance_variables_fill_the_greeting(twilio_server, tw, llm):
    agent = scripted_agent(
        tw,
        greeting="Hello {{name}}, welcome back.",
        system_prompt="You are the clinic's receptionist. The caller is {{name}}, patient {{ patient_id }}.",
    )
    missing = tw.post(
        "/v1/sessions/twilio", json={"agentId": agent["id"], "from": CALLER, "to": NUMBER}
    )
    assert missing.status_code == 422 and missing.json()["details"]["missing"] == [
        "name",
        "patient_id",
    ]
    instance = tw.post(
        f"/v1/agents/{agent['id']}/instances", json={"variables": {"name": "Ana", "patient_id": 42}}
    )
    assert instance.status_code == 201, instance.text
    instance_id = instance.json()["id"]
    assert (
        tw.get(f"/v1/agents/{agent['id']}/instances/{instance_id}").json()["variables"]["name"]
        == "Ana"
    )

    llm.script("Your next visit is on Monday.")
    twiml, session = twilio_session(tw, agent["id"], instanceId=instance_id)
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_audio(speech("When is my next visit?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)
        await client.stop()
        await client.wait_closed(timeout=5)
    wait_for_status(tw, session["session_id"], "completed")
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    assert items[0]["content"] == "Hello Ana, welcome back."
    assert any("The caller is Ana, patient 42." in str(r["messages"]) for r in llm.requests)
    # The stored agent keeps its placeholders.
    assert tw.get(f"/v1/agents/{agent['id']}").json()["greeting"] == "Hello {{name}}, welcome back."

    assert tw.delete(f"/v1/agents/{agent['id']}/instances/{instance_id}").status_code == 200
    gone = tw.post(
        "/v1/sessions/twilio",
        json={"agentId": agent["id"], "from": CALLER, "to": NUMBER, "instanceId": instance_id},
    )
    assert gone.status_code == 404 and gone.json()["code"] == "instance_not_found"


# --- The real local pipeline, end to end, over Twilio (no Twilio credentials: no REST hang-up) ---


async def test_local_pipeline_over_media_streams(server, api):
    agent = make_agent(
        api,
        system_prompt="You are the receptionist of a dental clinic. Answer in one short sentence.",
        greeting="Hello, thanks for calling the clinic.",
    )
    twiml, session = twilio_session(api, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=60)
        greeting_bytes = len(client.agent_audio)
        await client.send_audio(speech("What time do you open tomorrow morning?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=120)
        reply = ulaw_decode(bytes(client.agent_audio[greeting_bytes:]))
        assert len(reply) > 8000 * 2 * 0.3 and rms(reply) > 300
        await client.stop()
        await client.wait_closed(timeout=5)
    done = wait_for_status(api, session["session_id"], "completed")
    assert done["end_reason"] == "caller_hangup"
    items = api.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    users = [i["content"].lower() for i in items if i["speaker"] == "USER"]
    assert any("open" in u and "tomorrow" in u for u in users), items
    assert [i["speaker"] for i in items][0] == "AGENT" and items[-1]["speaker"] == "AGENT"
    # This server has no Twilio credentials: it said so when this call's stream joined.
    log = server.log()
    joined = log.index(f"joined session {session['session_id']}")
    assert "no Twilio credentials or call SID" in "".join(log[joined:].splitlines()[1:4])


# --- Telnyx and Plivo: same relay rules, their own serializers and XML ---

CARRIER_STARTS = {
    "telnyx": (
        lambda: {
            "event": "start",
            "sequence_number": "1",
            "stream_id": "telnyx-stream-1",
            "start": {
                "call_control_id": "v3:telnyx-call-1",
                "client_state": "",
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
        },
        lambda payload: {
            "event": "media",
            "stream_id": "telnyx-stream-1",
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
        },
        "media",
    ),
    "plivo": (
        lambda: {
            "event": "start",
            "sequenceNumber": 0,
            "extra_headers": "{}",
            "start": {
                "callId": "plivo-call-1",
                "streamId": "plivo-stream-1",
                "accountId": "MA1",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
        },
        lambda payload: {
            "event": "media",
            "streamId": "plivo-stream-1",
            "media": {"track": "inbound", "chunk": 1, "timestamp": "0", "payload": payload},
        },
        "playAudio",
    ),
}


def carrier_stream_url(api, carrier: str, agent_id: str) -> tuple[str, dict]:
    response = api.post(
        f"/v1/sessions/{carrier}",
        json={"agentId": agent_id, "from": CALLER, "to": NUMBER},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    stream = ElementTree.fromstring(response.json()["xml"]).find(".//Stream")
    return (stream.get("url") or stream.text), response.json()["session"]


@pytest.mark.parametrize("carrier", ["telnyx", "plivo"])
async def test_carrier_stream_without_token_is_refused(twilio_server, tw, carrier):
    url, session = carrier_stream_url(tw, carrier, scripted_agent(tw)["id"])
    start, _media, _audio_event = CARRIER_STARTS[carrier]
    async with connect(url.split("?")[0]) as ws:
        await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        await ws.send(json.dumps(start()))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
    assert (ws.close_code, ws.close_reason) == (
        4401,
        "the stream's start message carries no relay token",
    )
    assert f"{carrier} stream refused (missing_token)" in twilio_server.log()
    assert tw.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "created"
    assert active_calls(twilio_server) == 0


@pytest.mark.parametrize("carrier", ["telnyx", "plivo"])
async def test_carrier_stream_call(twilio_server, tw, llm, carrier):
    llm.script("We open at nine.")
    agent = scripted_agent(tw, greeting="Hello from the clinic.")
    url, session = carrier_stream_url(tw, carrier, agent["id"])
    assert "token=" in url
    start, media, audio_event = CARRIER_STARTS[carrier]
    agent_audio = bytearray()
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        await ws.send(json.dumps(start()))

        async def receive():
            async for raw in ws:
                message = json.loads(raw)
                if message.get("event") == audio_event:
                    agent_audio.extend(base64.b64decode(message["media"]["payload"]))

        receiver = asyncio.create_task(receive())
        deadline = time.monotonic() + 30
        while len(agent_audio) < 8000 * 1.0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert rms(ulaw_decode(bytes(agent_audio))) > 300
        caller = ulaw_encode(
            speech("What time do you open tomorrow morning?", sample_rate=8000) + b"\0\0" * 8000
        )
        for i in range(0, len(caller), 160):
            await ws.send(json.dumps(media(base64.b64encode(caller[i : i + 160]).decode())))
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 60
        items = []
        while time.monotonic() < deadline and not any(i["speaker"] == "USER" for i in items):
            await asyncio.sleep(0.2)
            items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
        receiver.cancel()
    assert any(i["speaker"] == "USER" and "open" in i["content"].lower() for i in items), items
    done = wait_for_status(tw, session["session_id"], "completed")
    assert (done["end_reason"], done["connection_type"]) == ("caller_hangup", carrier)
    wait_no_calls(twilio_server)


async def test_hang_up_still_happens_when_the_caller_talks_over_the_goodbye(
    twilio_server, tw, twilio_rest, llm
):
    llm.script("We open at nine.")
    agent = scripted_agent(tw, greeting="Hello.", max_turns=1)
    twiml, session = twilio_session(tw, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_audio(speech("When do you open?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)
        await client.send_audio(speech("And when do you close?", sample_rate=8000))
        await client.send_silence(0.6)
        audio_before = len(client.agent_audio)
        await client.wait_until(lambda: len(client.agent_audio) > audio_before, 30, "goodbye audio")
        await client.send_audio(speech("Wait, one more thing please.", sample_rate=8000))
        hang_up = await asyncio.to_thread(twilio_rest.wait_for_hang_up, client.call_sid, 30)
        await client.wait_closed(timeout=10)
    assert hang_up.value("Status") == "completed"
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "max_turns"
    wait_no_calls(twilio_server)


async def test_dropped_stream_ends_the_call_within_a_second(twilio_server, tw):
    twiml, session = twilio_session(tw, scripted_agent(tw, greeting="Hello there.")["id"])
    client = TwilioMediaStreamsClient.from_twiml(twiml)
    await client.open()
    await client.wait_marks(1, timeout=30)
    await client.close()  # no `stop`: the connection just drops
    dropped = time.monotonic()
    done = wait_for_status(tw, session["session_id"], "completed", timeout=5)
    assert time.monotonic() - dropped < 1.5
    assert done["end_reason"] == "caller_hangup"
    wait_no_calls(twilio_server, timeout=1)
