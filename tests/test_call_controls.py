"""Inline calls over the direct WebSocket, one call control at a time: who speaks first,
non-interruptible agents, maximum duration, inactivity, recording.

Real Whisper/Piper/VAD with the scripted LLM (`scripted` pipeline); the caller is
Piper-synthesized speech streamed in real time.
"""

import asyncio
import io
import time
import wave

import numpy as np

from app.client import SessionClient
from pipelines.builder import INACTIVITY_GOODBYE, STILL_THERE, TIME_UP_GOODBYE
from tests.audio import channel_energy, rms, speech
from tests.helpers.calls import LONG_GREETING, inline_call, transcript, wait_for_status


async def keep_microphone_open(client: SessionClient, seconds: float) -> None:
    """Stream silence like an open, quiet microphone."""
    await client.stream_silence(seconds)


async def test_user_first_agent_waits_for_the_caller(server, api, llm):
    llm.script("We open at nine tomorrow.")
    question = speech("What time do you open tomorrow?", tail_secs=1.5)
    call = inline_call(api, firstSpeaker="user", greeting="This greeting must not be spoken.")
    async with SessionClient(call["url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        await keep_microphone_open(client, 3.0)
        assert not client.agent_audio and not client.of_type("agent.speech.started")
        await client.stream(question)
        heard = await client.wait_for("transcript.user", timeout=30)
        reply = await client.wait_for("transcript.agent", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        assert reply["text"] == "We open at nine tomorrow."
        assert rms(bytes(client.agent_audio)) > 300
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    assert "open" in heard["text"].lower()
    items = transcript(api, call["session_id"])
    assert [t["speaker"] for t in items] == ["USER", "AGENT"]
    assert "This greeting" not in " ".join(t["content"] for t in items)


async def test_non_interruptible_agent_talks_over_the_caller(server, api, llm):
    llm.script("Happy to help with that.")
    question = speech("I have a question about parking at the clinic", tail_secs=1.5)
    call = inline_call(api, interruptible=False, greeting=LONG_GREETING)
    async with SessionClient(call["url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        started = await client.wait_for("agent.speech.started", timeout=30)
        await asyncio.sleep(1.5)  # the agent is mid-greeting
        await client.stream(question)
        barged_at = time.monotonic()
        stopped = await client.wait_for("agent.speech.stopped", timeout=60)
        greeting = await client.wait_for("transcript.agent", timeout=10)
        heard = await client.wait_for("transcript.user", timeout=30)
        # The caller's turn is answered once the greeting is over.
        reply = await client.wait_for("transcript.agent", timeout=30, count=2)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    assert greeting["text"] == LONG_GREETING and greeting["interrupted"] is False
    assert stopped["_at"] - started["_at"] > 10  # the whole greeting played, well past the barge-in
    assert stopped["_at"] > barged_at
    assert not client.of_type(
        "input.speech.started"
    )  # the client is never told to drop agent audio
    assert "parking" in heard["text"].lower()
    assert reply["text"] == "Happy to help with that."
    items = transcript(api, call["session_id"])
    assert any(t["speaker"] == "USER" and "parking" in t["content"].lower() for t in items)
    assert not any(t["interrupted"] for t in items)


async def test_inactivity_prompts_once_then_ends(server, api, llm):
    call = inline_call(api, inactivityTimeout=10, inactivityAction="prompt")
    async with SessionClient(call["url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        microphone = asyncio.create_task(keep_microphone_open(client, 60))
        await client.wait_for("agent.speech.stopped", timeout=30)
        greeted_at = time.monotonic()
        prompt = await client.wait_for("transcript.agent", timeout=30, count=2)
        prompted_at = prompt["_at"]
        await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        ended = await client.wait_for("session.ended", timeout=40)
        microphone.cancel()
    assert prompt["text"] == STILL_THERE
    assert 9 < prompted_at - greeted_at < 20
    assert ended["reason"] == "inactivity"
    assert ended["_at"] - prompted_at > 9
    items = transcript(api, call["session_id"])
    assert [t["content"] for t in items] == [
        "Hello, thanks for calling.",
        STILL_THERE,
        INACTIVITY_GOODBYE,
    ]
    session = wait_for_status(api, call["session_id"], "completed")
    assert session["end_reason"] == "inactivity"


async def test_inactivity_end_call_action(server, api, llm):
    call = inline_call(api, inactivityTimeout=10)
    async with SessionClient(call["url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        microphone = asyncio.create_task(keep_microphone_open(client, 40))
        await client.wait_for("agent.speech.stopped", timeout=30)
        greeted_at = time.monotonic()
        ended = await client.wait_for("session.ended", timeout=40)
        microphone.cancel()
    assert ended["reason"] == "inactivity" and 9 < ended["_at"] - greeted_at < 25
    assert transcript(api, call["session_id"])[-1]["content"] == INACTIVITY_GOODBYE


async def test_max_duration_says_goodbye_and_ends(server, api, llm):
    call = inline_call(api, maxDuration=60)
    async with SessionClient(call["url"]) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        microphone = asyncio.create_task(keep_microphone_open(client, 90))
        await client.wait_for("agent.speech.stopped", timeout=30)
        before_goodbye = len(client.agent_audio)
        ended = await client.wait_for("session.ended", timeout=90)
        microphone.cancel()
    assert ended["reason"] == "max_duration"
    assert 58 < ended["_at"] - ready["_at"] < 75
    assert rms(bytes(client.agent_audio[before_goodbye:])) > 300  # the goodbye was heard
    assert transcript(api, call["session_id"])[-1]["content"] == TIME_UP_GOODBYE
    session = wait_for_status(api, call["session_id"], "completed")
    assert session["end_reason"] == "max_duration"


async def test_recording_is_stereo_with_both_voices_time_aligned(server, api, llm):
    llm.script("Sure, we open at nine.")
    question = speech("What time do you open tomorrow?", tail_secs=1.5)
    call = inline_call(api, greeting="Hello, thanks for calling the clinic.")
    async with SessionClient(call["url"]) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        await asyncio.sleep(1.0)  # the greeting has played out at the far end
        caller_started = time.monotonic() - ready["_at"] + 0.3  # the speech's leading silence
        await client.stream(question)
        await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        # Written as the call goes: the file is there, and playable, before the call ends.
        live = api.get(f"/v1/sessions/{call['session_id']}/recording")
        assert live.status_code == 200 and live.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(live.content)) as wav:
            assert wav.getnchannels() == 2 and wav.getnframes() > 0
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    wait_for_status(api, call["session_id"], "completed")

    response = api.get(f"/v1/sessions/{call['session_id']}/recording")
    assert response.status_code == 200
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    caller, agent = channel_energy(samples[:, 0], rate), channel_energy(samples[:, 1], rate)
    picture = "\n".join(
        "".join("#" if x > 300 else "." if x > 30 else " " for x in e) for e in (caller, agent)
    )
    loud_caller = np.flatnonzero(caller > 300)
    loud_agent = np.flatnonzero(agent > 300)
    assert (
        len(loud_caller) > 5 and len(loud_agent) > 10
    )  # both voices audible, each on its own side
    # Time-aligned: the greeting (right) comes first, the caller (left) starts where they spoke,
    # and the agent's answer (right) follows the caller.
    first_caller = loud_caller[0] * 0.1
    assert loud_agent[0] * 0.1 < first_caller
    assert abs(first_caller - caller_started) < 1.0, (first_caller, caller_started, picture)
    assert (loud_agent * 0.1 > loud_caller[-1] * 0.1).any()
    # The caller's voice isn't on the agent's side while only the caller speaks.
    only_caller = [i for i in loud_caller if i < len(agent) and agent[i] < 50]
    assert len(only_caller) > 5

    assert api.get("/v1/sessions/ses_nope/recording").status_code == 404
    off = inline_call(api, recordingEnabled=False)
    async with SessionClient(off["url"]) as client:
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    wait_for_status(api, off["session_id"], "completed")
    missing = api.get(f"/v1/sessions/{off['session_id']}/recording")
    assert missing.status_code == 404 and missing.json()["code"] == "recording_not_found"
