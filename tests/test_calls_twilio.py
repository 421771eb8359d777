"""Inline calls over Twilio Media Streams (the Twilio test client), one control at a time,
and the `transfer_call` tool against the local stand-in for Twilio's REST API."""

import asyncio
import io
import time
import wave

import numpy as np

from pipelines.builder import INACTIVITY_GOODBYE, STILL_THERE, TIME_UP_GOODBYE
from tests.audio import channel_energy, rms, speech
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.twilio_client import TwilioMediaStreamsClient, parse_twiml, ulaw_decode
from tests.helpers.calls import LONG_GREETING, transcript, wait_for_status

TRANSFER_TO = "+14155550142"


def inline_twilio_call(api, **fields) -> tuple[str, dict]:
    """The TwiML and session of an inline call, as POST /v1/calls/inline returns them."""
    body = {
        "systemPrompt": "You are a helpful receptionist. Answer in one short sentence.",
        "voice": "joe",
        "language": "en",
        "greeting": "Hello, thanks for calling.",
        "pipeline": "scripted",
        **fields,
    }
    response = api.post("/v1/calls/inline", json=body)
    assert response.status_code == 201, response.text
    call = response.json()
    assert call["connection_type"] == "twilio"  # the default
    stream_url, parameters = parse_twiml(call["markup"])
    assert stream_url == call["url"] and set(parameters) == {"token"}
    return call["markup"], call["session"]


def agent_pcm(client: TwilioMediaStreamsClient) -> bytes:
    return ulaw_decode(bytes(client.agent_audio))


async def test_user_first_over_twilio(twilio_server, tw, llm):
    llm.script("We open at nine tomorrow.")
    question = speech("What time do you open tomorrow?", sample_rate=8000)
    twiml, session = inline_twilio_call(
        tw, firstSpeaker="user", greeting="This greeting must not be spoken."
    )
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.send_silence(3.0)
        assert not client.agent_audio
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_marks(1, timeout=60)
        assert rms(agent_pcm(client)) > 300
        await client.stop()
    wait_for_status(tw, session["session_id"], "completed")
    items = transcript(tw, session["session_id"])
    assert [t["speaker"] for t in items] == ["USER", "AGENT"]
    assert items[-1]["content"] == "We open at nine tomorrow."


async def test_non_interruptible_over_twilio(twilio_server, tw, llm):
    llm.script("Happy to help with that.")
    question = speech("I have a question about parking at the clinic", sample_rate=8000)
    twiml, session = inline_twilio_call(tw, interruptible=False, greeting=LONG_GREETING)
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_until(lambda: len(client.agent_audio) > 8000, 30, "the greeting started")
        await asyncio.sleep(1.5)
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)  # the greeting, then the answer, both played out
        await client.stop()
    assert not client.events("clear")  # Twilio was never told to drop the agent's audio
    greeting_bytes = client.marks_received["utterance-1"][1]
    assert greeting_bytes / 8000 > 10  # the whole greeting was sent
    wait_for_status(tw, session["session_id"], "completed")
    items = transcript(tw, session["session_id"])
    # Agent turns enter the transcript once heard (Twilio's mark echo), so entries written while the
    # greeting played may land in either order: look the greeting up by its text.
    agent_turns = {t["content"]: t for t in items if t["speaker"] == "AGENT"}
    assert LONG_GREETING in agent_turns and not agent_turns[LONG_GREETING]["interrupted"]
    assert any(t["speaker"] == "USER" and "parking" in t["content"].lower() for t in items)
    assert "Happy to help with that." in agent_turns


async def test_inactivity_prompt_then_end_over_twilio(twilio_server, tw, twilio_rest, llm):
    twiml, session = inline_twilio_call(tw, inactivityTimeout=10, inactivityAction="prompt")
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        microphone = asyncio.create_task(client.send_silence(60))
        await client.wait_closed(timeout=60)
        microphone.cancel()
    hang_up = twilio_rest.wait_for_hang_up(client.call_sid, 10)
    assert hang_up is not None
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "inactivity" and 20 < done["duration_secs"] < 45
    assert [t["content"] for t in transcript(tw, session["session_id"])] == [
        "Hello, thanks for calling.",
        STILL_THERE,
        INACTIVITY_GOODBYE,
    ]


async def test_max_duration_over_twilio(twilio_server, tw, llm):
    twiml, session = inline_twilio_call(tw, maxDuration=60)
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        microphone = asyncio.create_task(client.send_silence(90))
        await client.wait_marks(1, timeout=30)
        before_goodbye = len(client.agent_audio)
        await client.wait_closed(timeout=90)
        microphone.cancel()
    assert rms(ulaw_decode(bytes(client.agent_audio[before_goodbye:]))) > 300
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "max_duration" and 58 < done["duration_secs"] < 75
    assert transcript(tw, session["session_id"])[-1]["content"] == TIME_UP_GOODBYE


async def test_recording_over_twilio(twilio_server, tw, llm):
    llm.script("Sure, we open at nine.")
    question = speech("What time do you open tomorrow?", sample_rate=8000)
    twiml, session = inline_twilio_call(tw, greeting="Hello, thanks for calling the clinic.")
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)
        await client.stop()
    wait_for_status(tw, session["session_id"], "completed")
    response = tw.get(f"/v1/sessions/{session['session_id']}/recording")
    assert response.status_code == 200
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getnchannels() == 2
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    caller, agent = channel_energy(samples[:, 0], rate), channel_energy(samples[:, 1], rate)
    loud_caller, loud_agent = np.flatnonzero(caller > 300), np.flatnonzero(agent > 300)
    assert len(loud_caller) > 5 and len(loud_agent) > 10
    assert loud_agent[0] < loud_caller[0] < loud_agent[-1]  # greeting, caller, answer: in order


async def test_transfer_call_moves_the_call_through_twilio_rest(
    twilio_server, tw, twilio_rest, llm
):
    tool = {
        "name": "transfer_to_billing",
        "description": "Transfer the caller to billing",
        "type": "transfer_call",
        "phone_number": TRANSFER_TO,
    }
    llm.script(ToolCall("transfer_to_billing", {}))
    question = speech("Please transfer me to billing.", sample_rate=8000)
    twiml, session = inline_twilio_call(tw, tools=[tool])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_closed(timeout=60)
    path = f"/2010-04-01/Accounts/{twilio_rest.account_sid}/Calls/{client.call_sid}.json"
    updates = [r for r in twilio_rest.requests if r.path == path]
    assert [r.value("Twiml") for r in updates] == [
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{TRANSFER_TO}</Dial></Response>'
    ]
    assert (updates[0].username, updates[0].password) == (
        twilio_rest.account_sid,
        twilio_rest.auth_token,
    )
    assert not twilio_rest.hang_ups(client.call_sid)  # the transferred call lives on
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "transferred"
    items = transcript(tw, session["session_id"])
    assert items[-1]["speaker"] == "TOOL" and TRANSFER_TO in items[-1]["content"]
    time.sleep(0.5)
    assert not twilio_rest.hang_ups(client.call_sid)
