"""Voicemail detection on outbound calls (issue 17): an agent's `voicemail` setting runs
Pipecat's VoicemailDetector in the call's pipeline, its greeting held until a person is heard.
Over the Twilio Media Streams client with Piper-synthesized callee audio, the scripted LLM as
the classifier, and the fake Twilio REST API taking the hang-up."""

import asyncio
import base64
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.voicemail import call_setting
from tests.audio import rms, speech
from tests.fakes.twilio_client import (
    SAMPLE_RATE,
    TwilioMediaStreamsClient,
    ulaw_decode,
    ulaw_encode,
)
from tests.helpers.calls import transcript, wait_for_status
from tests.helpers.dashboard import logged_in
from tests.helpers.servers import scripted_agent
from tests.helpers.twilio import ACCOUNT_SID, signed_post

GREETING = "Hello, this is the clinic calling about your appointment."
MESSAGE = "Hi, this is the clinic. Please call us back about your appointment. Goodbye."
MACHINE_GREETING = (
    "Hi, you've reached Dana. I can't take your call right now. "
    "Please leave a message after the tone."
)
ASKED = "Decide whether a person answered"
"""Words of the classifier's question (Pipecat's VOICEMAIL_QUESTION), which no other request has."""


@pytest.fixture(autouse=True)
def _no_verdicts_left_over(scripted_llm):
    """The scripted verdicts a call did not ask for are not left to another module's calls."""
    yield
    scripted_llm.reset()


def verdict(choice: str) -> str:
    """The classifier LLM's answer, in the JSON shape Pipecat's LLMClassifier asks for."""
    other = "conversation" if choice == "voicemail" else "voicemail"
    return json.dumps(
        {"voicemail": {"choice": choice, "probabilities": {choice: 0.97, other: 0.03}}}
    )


def beep(secs: float = 1.0, hz: float = 1000.0) -> bytes:
    """An answering machine's tone: a sine at 8 kHz, 16-bit."""
    t = np.arange(int(SAMPLE_RATE * secs)) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).tobytes()


def outbound_call(api, agent: dict) -> dict:
    """A Twilio call for the agent through POST /v1/calls: the tenant dials with its TwiML."""
    response = api.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "twilio"})
    assert response.status_code == 201, response.text
    return response.json()


def voicemail_agent(api, action: str = "leave_message", **fields) -> dict:
    setting = {"detect": True, "action": action}
    if action == "leave_message":
        setting["message"] = MESSAGE
    return scripted_agent(api, greeting=GREETING, voicemail=setting, **fields)


async def test_a_person_answering_hears_the_greeting_once_detected_and_talks(tw, llm):
    agent = voicemail_agent(tw)
    llm.script_oneshot(verdict("conversation"), verdict("conversation"), when=ASKED)
    llm.script("Great, I can hear you. Do you have a minute?")
    call = outbound_call(tw, agent)
    async with TwilioMediaStreamsClient.from_twiml(call["markup"]) as client:
        await asyncio.sleep(2.0)
        # Nothing heard yet: the greeting waits for a person (TTSGate).
        assert client.media_messages == 0
        await client.send_audio(speech("Hello? This is Dana.", sample_rate=SAMPLE_RATE))
        spoke_at = time.monotonic()
        await client.send_silence(1.5)
        await client.wait_marks(2, timeout=60)  # the greeting, then the reply to "Hello?"
        assert client.media_log[0][0] >= spoke_at
        await client.stop()
        await client.wait_closed(timeout=10)
    ended = wait_for_status(tw, call["session_id"], "completed")
    assert ended["end_reason"] == "caller_hangup"
    turns = [(t["speaker"], t["content"]) for t in transcript(tw, call["session_id"])]
    said = [text for speaker, text in turns if speaker == "AGENT"]
    assert " ".join(said) == f"{GREETING} Great, I can hear you. Do you have a minute?", turns
    assert any(speaker == "USER" and "hello" in text.lower() for speaker, text in turns), turns
    asked = [r for r in llm.oneshot_requests if ASKED in json.dumps(r["messages"])]
    assert asked and "hello" in json.dumps(asked[0]["messages"]).lower()


async def _reach_a_machine(tw, llm, agent: dict) -> tuple[dict, TwilioMediaStreamsClient, float]:
    """A call answered by a machine: its greeting, then the tone, then silence until the
    server hangs up. The call, the client and when the tone ended."""
    llm.script_oneshot(*[verdict("voicemail")] * 6, when=ASKED)
    call = outbound_call(tw, agent)
    client = TwilioMediaStreamsClient.from_twiml(call["markup"])
    async with client:
        await client.send_audio(speech(MACHINE_GREETING, sample_rate=SAMPLE_RATE))
        await client.send_silence(0.4)
        await client.send_audio(beep())
        beep_ended = time.monotonic()
        silence = asyncio.create_task(client.send_silence(30))
        await client.wait_closed(timeout=60)
        silence.cancel()
    return call, client, beep_ended


async def test_a_machine_gets_the_message_after_the_beep(tw, llm, twilio_rest):
    agent = voicemail_agent(tw)
    call, client, beep_ended = await _reach_a_machine(tw, llm, agent)
    ended = wait_for_status(tw, call["session_id"], "completed")
    assert ended["end_reason"] == "voicemail"
    # The greeting was never played; the message was, after the tone, and then the hang-up.
    agent_turns = [
        t["content"] for t in transcript(tw, call["session_id"]) if t["speaker"] == "AGENT"
    ]
    assert agent_turns == [MESSAGE]
    assert client.media_log and client.media_log[0][0] >= beep_ended
    heard = ulaw_decode(bytes(client.agent_audio))
    assert len(heard) / 2 / SAMPLE_RATE > 2.0 and rms(heard) > 300
    await asyncio.to_thread(twilio_rest.wait_for_hang_up, client.call_sid, 15)


async def test_a_machine_is_hung_up_on_without_a_word(tw, llm, twilio_rest):
    agent = voicemail_agent(tw, action="hang_up")
    call, client, _ = await _reach_a_machine(tw, llm, agent)
    ended = wait_for_status(tw, call["session_id"], "completed")
    assert ended["end_reason"] == "voicemail"
    # Not a word: the held greeting was dropped (only the transport's closing silence came).
    assert rms(ulaw_decode(bytes(client.agent_audio))) == 0
    assert not [t for t in transcript(tw, call["session_id"]) if t["speaker"] == "AGENT"]
    await asyncio.to_thread(twilio_rest.wait_for_hang_up, client.call_sid, 15)


async def test_twilio_amd_and_the_detector_leave_the_message_once(
    twilio_server, tw, llm, twilio_rest
):
    """An outbound call through the REST API asks for Twilio's AMD too. Twilio's machine
    verdict, landing while the detector is still listening, has the detector leave the
    message; the detector's own later verdict changes nothing."""
    agent = voicemail_agent(tw, phone_numbers=["+15550007901"])
    llm.script_oneshot(*[verdict("voicemail")] * 6, when=ASKED)
    placed = tw.post("/v1/calls/outbound", json={"agentId": agent["id"], "to": "+14155550199"})
    assert placed.status_code == 201, placed.text
    task = placed.json()
    [request] = [r for r in twilio_rest.created_calls() if r.value("To") == "+14155550199"]
    assert (request.value("MachineDetection"), request.value("AsyncAmd")) == (
        "DetectMessageEnd",
        "true",
    )
    connect = urlsplit(request.value("Url") or "").path
    answered = {"AccountSid": ACCOUNT_SID, "CallSid": task["call_sid"], "CallStatus": "in-progress"}
    twiml = await asyncio.to_thread(signed_post, twilio_server, connect, answered)
    assert twiml.status_code == 200, twiml.text
    async with TwilioMediaStreamsClient.from_twiml(twiml.text, call_sid=task["call_sid"]) as client:
        await client.send_audio(speech(MACHINE_GREETING, sample_rate=SAMPLE_RATE))
        amd = urlsplit(request.value("AsyncAmdStatusCallback") or "").path
        form = {
            "AccountSid": ACCOUNT_SID,
            "CallSid": task["call_sid"],
            "AnsweredBy": "machine_end_beep",
        }
        assert (await asyncio.to_thread(signed_post, twilio_server, amd, form)).status_code == 204
        silence = asyncio.create_task(client.send_silence(30))
        await client.wait_closed(timeout=60)
        silence.cancel()
    ended = wait_for_status(tw, task["session_id"], "completed")
    assert ended["end_reason"] == "voicemail"
    agent_turns = [
        t["content"] for t in transcript(tw, task["session_id"]) if t["speaker"] == "AGENT"
    ]
    assert agent_turns == [MESSAGE]
    # Left once, by the pipeline: no second message through Twilio's REST API.
    updates = [
        r for r in twilio_rest.requests if r.path.endswith(f"/Calls/{task['call_sid']}.json")
    ]
    assert not [r for r in updates if r.value("Twiml")]
    await asyncio.to_thread(twilio_rest.wait_for_hang_up, task["call_sid"], 15)


async def test_a_telnyx_call_detects_the_machine_in_its_pipeline(tw, llm):
    """Telnyx has no answering-machine detection here: the pipeline's detector alone hangs up."""
    agent = voicemail_agent(tw, action="hang_up")
    llm.script_oneshot(*[verdict("voicemail")] * 6, when=ASKED)
    response = tw.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "telnyx"})
    assert response.status_code == 201, response.text
    call = response.json()
    heard = bytearray()
    callee = ulaw_encode(
        speech(MACHINE_GREETING, sample_rate=SAMPLE_RATE) + beep() + b"\0\0" * SAMPLE_RATE * 30
    )
    async with connect(call["url"]) as ws:
        await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        await ws.send(json.dumps(TELNYX_START))

        async def receive():
            async for raw in ws:
                message = json.loads(raw)
                if message.get("event") == "media":
                    heard.extend(base64.b64decode(message["media"]["payload"]))

        receiver = asyncio.create_task(receive())
        started = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            for index, i in enumerate(range(0, len(callee), 160)):
                payload = base64.b64encode(callee[i : i + 160]).decode()
                await ws.send(json.dumps(telnyx_media(payload)))
                await asyncio.sleep(max(started + (index + 1) * 0.02 - time.monotonic(), 0))
        await asyncio.wait_for(receiver, 10)
    ended = wait_for_status(tw, call["session_id"], "completed")
    assert (ended["end_reason"], ended["connection_type"]) == ("voicemail", "telnyx")
    assert rms(ulaw_decode(bytes(heard))) == 0  # the greeting was held, then dropped


TELNYX_START = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": "telnyx-stream-vm",
    "start": {
        "call_control_id": "v3:telnyx-call-vm",
        "client_state": "",
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}


def telnyx_media(payload: str) -> dict:
    return {
        "event": "media",
        "stream_id": "telnyx-stream-vm",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
    }


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ({"action": "call_back"}, "voicemail.action"),
        ({"action": "leave_message"}, "voicemail"),
        ({"action": "leave_message", "message": ""}, "voicemail.message"),
        ({"action": "hang_up", "extra": 1}, None),
        ("yes", "voicemail"),
    ],
)
def test_a_bad_voicemail_setting_is_422(tw, setting, field):
    body = {"name": "x", "voice_id": "joe", "system_prompt": "x", "pipeline": "scripted"}
    response = tw.post("/v1/agents", json={**body, "voicemail": setting})
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error"
    if field:
        assert field in error["message"]


def test_the_setting_is_stored_changed_and_refused_in_a_burst(tw):
    agent = voicemail_agent(tw)
    assert agent["voicemail"] == {"detect": True, "action": "leave_message", "message": MESSAGE}
    changed = tw.patch(f"/v1/agents/{agent['id']}", json={"voicemail": {"action": "hang_up"}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["voicemail"] == {"detect": True, "action": "hang_up", "message": None}
    assert (
        tw.patch(f"/v1/agents/{agent['id']}", json={"voicemail": None}).json()["voicemail"] is None
    )

    def refused(_):
        return tw.patch(
            f"/v1/agents/{agent['id']}", json={"voicemail": {"action": "leave_message"}}
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(refused, range(16))) == {422}
    assert tw.get(f"/v1/agents/{agent['id']}").json()["voicemail"] is None


def test_the_dashboard_agent_form_sets_the_voicemail_setting(twilio_server, tw):
    form = {"name": "Reminders", "pipeline": "scripted", "voice_id": "joe", "language": "en"}
    form |= {"max_turns": "10", "system_prompt": "You call about appointments."}
    with logged_in(twilio_server) as client:
        bad = client.post("/agents/new", data={**form, "voicemail_action": "leave_message"})
        assert bad.status_code == 422 and "leave_message needs a message" in bad.text
        created = client.post(
            "/agents/new",
            data={**form, "voicemail_action": "leave_message", "voicemail_message": MESSAGE},
        )
        assert created.status_code == 303, created.text
        agent_id = created.headers["location"].rsplit("/", 1)[1]
        agent = tw.get(f"/v1/agents/{agent_id}").json()
        assert agent["voicemail"] == {"detect": True, "action": "leave_message", "message": MESSAGE}
        page = client.get(f"/agents/{agent_id}").text
        assert 'value="leave_message" selected' in page and f'value="{MESSAGE}"' in page
        assert client.post(f"/agents/{agent_id}", data=form).status_code == 303
        assert tw.get(f"/v1/agents/{agent_id}").json()["voicemail"] is None


@pytest.mark.storage_free
def test_a_campaigns_setting_overrides_its_agents():
    agents = {"detect": True, "action": "hang_up", "message": None}
    assert call_setting(None, agents) == agents
    assert call_setting({"detect": False}, agents) is None  # a campaign turns it off
    leave = {"action": "leave_message", "message": MESSAGE}
    assert call_setting(leave, agents) == {"detect": True, **leave}
    assert call_setting(None, None) is None and call_setting({"detect": False}) is None


def test_inline_calls_take_the_setting(tw):
    body = {
        "systemPrompt": "You call about appointments.",
        "voice": "joe",
        "language": "en",
        "greeting": GREETING,
        "pipeline": "scripted",
        "connectionType": "twilio",
    }
    bad = tw.post("/v1/calls/inline", json={**body, "voicemail": {"action": "leave_message"}})
    assert bad.status_code == 422 and "leave_message needs a message" in bad.json()["message"]
    setting = {"action": "leave_message", "message": MESSAGE}
    assert tw.post("/v1/calls/inline", json={**body, "voicemail": setting}).status_code == 201
