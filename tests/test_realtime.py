"""The built-in `realtime` pipeline end to end: Pipecat's OpenAI Realtime service in place of
STT, LLM and TTS, against a local server speaking the Realtime API's WebSocket events, in real
calls over the session WebSocket with the caller's speech synthesized by Piper."""

import asyncio
import io
import json
import time
import wave

import numpy as np
import pytest

from app.client import SessionClient
from tests.audio import rms, speech
from tests.fakes.openai_realtime import FakeOpenAIRealtime
from tests.fakes.scripted_llm import ToolCall
from tests.helpers.calls import (
    agent_ws,
    ask,
    end,
    transcript,
    typed_spoken_typed,
    wait_for_cost,
    wait_for_status,
)
from tests.helpers.servers import make_agent, start_server
from tests.helpers.twilio import phone_question

LONG_REPLY = (
    "We are open every weekday from nine in the morning until five in the afternoon, "
    "and on Saturdays from ten until two, but we are closed on Sundays and on public holidays."
)
PRICES = {
    "input": 4.0,
    "output": 16.0,
    "cache_read": 0.40,
    "audio_input": 32.0,
    "audio_output": 64.0,
}
"""`pipelines/realtime.yaml`'s gpt-realtime prices, USD per million tokens."""


@pytest.fixture(scope="module")
def realtime_api():
    fake = FakeOpenAIRealtime().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def realtime_server(tmp_path_factory, realtime_api):
    env = {"OPENAI_API_KEY": realtime_api.api_key, "OPENAI_REALTIME_URL": realtime_api.url}
    server = start_server(tmp_path_factory.mktemp("realtime"), env=env)
    yield server
    server.stop()


@pytest.fixture
def api(realtime_server, realtime_api):
    realtime_api.reset()
    with realtime_server.client() as client:
        yield client


def realtime_agent(api, **fields) -> dict:
    return make_agent(
        api, pipeline="realtime", voice_id="marin", greeting="", first_speaker="user", **fields
    )


def recording_channels(api, session_id: str) -> tuple[np.ndarray, np.ndarray]:
    deadline = time.monotonic() + 30
    while api.get(f"/v1/sessions/{session_id}").json()["recording"]["status"] != "available":
        assert time.monotonic() < deadline, "the recording never became available"
        time.sleep(0.2)
    response = api.get(f"/v1/sessions/{session_id}/recording")
    assert response.status_code == 200, response.text
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getnchannels() == 2
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    return samples[:, 0], samples[:, 1]


async def test_a_question_is_answered_in_speech_and_both_sides_are_stored(
    realtime_server, realtime_api, api
):
    answer = "On Monday we open at nine."
    realtime_api.script(answer)
    agent = realtime_agent(api)
    async with SessionClient(agent_ws(realtime_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await ask(client, "What time do you open on Monday?")
        await end(client)

    heard = client.of_type("transcript.user")[0]["text"]
    assert "monday" in heard.lower() and "open" in heard.lower(), heard
    assert client.of_type("transcript.agent")[0] == {
        "type": "transcript.agent",
        "text": answer,
        "interrupted": False,
        "_at": client.of_type("transcript.agent")[0]["_at"],
    }
    # The provider's speech reached the caller (resampled from 24 kHz to the session's 16 kHz).
    [response] = realtime_api.responses
    assert len(client.agent_audio) / 2 / 16000 == pytest.approx(
        response["audio_ms"] / 1000, abs=0.3
    )
    assert rms(bytes(client.agent_audio)) > 300

    # The session Pipecat configured: the agent's prompt, voice, transcription and server VAD.
    [session] = realtime_api.sessions
    assert session["model"] == "gpt-realtime"
    assert session["instructions"] == agent["system_prompt"]
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert realtime_api.connections == [{"model": "gpt-realtime"}]

    wait_for_status(api, ready["session_id"], "completed")
    items = transcript(api, ready["session_id"])
    assert [(i["speaker"], i["content"]) for i in items] == [("USER", heard), ("AGENT", answer)]

    # Recorded as any call: the caller on the left channel, the agent on the right.
    caller, agent_side = recording_channels(api, ready["session_id"])
    assert rms(caller.tobytes()) > 100 and rms(agent_side.tobytes()) > 100


async def test_the_greeting_cost_and_latency_are_recorded(realtime_server, realtime_api, api):
    greeting = "Hello, thanks for calling."
    realtime_api.script(greeting, "We close at five.", "Yes, on Saturdays too.")
    agent = make_agent(api, pipeline="realtime", voice_id="marin", greeting=greeting)
    async with SessionClient(agent_ws(realtime_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        await ask(client, "When do you close today?", replies=2)
        await ask(client, "And on Saturdays?", replies=3)
        await end(client)

    # The model was told to say the greeting, and did, first.
    [told] = realtime_api.of_type("conversation.item.create")
    assert greeting in told["item"]["content"][0]["text"]
    assert client.of_type("transcript.agent")[0]["text"] == greeting
    session = wait_for_cost(api, ready["session_id"])
    [line] = session["cost"]["breakdown"]
    usages = [r["usage"] for r in realtime_api.responses]
    assert len(usages) == 3
    tokens = {
        "input": sum(u["input_token_details"]["text_tokens"] for u in usages),
        "output": sum(u["output_token_details"]["text_tokens"] for u in usages),
        "cache_read": 0,
        "cache_write": 0,
        "audio_input": sum(u["input_token_details"]["audio_tokens"] for u in usages),
        "audio_output": sum(u["output_token_details"]["audio_tokens"] for u in usages),
    }
    assert tokens["audio_input"] > 0 and tokens["audio_output"] > 0
    assert (line["stage"], line["provider"], line["model"]) == (
        "realtime",
        "openai_realtime",
        "gpt-realtime",
    )
    assert line["usage"] == {f"{k}_tokens": v for k, v in tokens.items()}
    expected = sum(tokens[unit] * price / 1e6 for unit, price in PRICES.items())
    assert line["amount"] == pytest.approx(expected, abs=1e-6) and expected > 0

    # Voice-to-voice per turn: the server VAD's end of speech → the agent's first audio out.
    assert 0 < session["latency"]["greeting_secs"] < 5, session["latency"]
    turns = session["latency"]["turns"]
    assert len(turns) == 2, session["latency"]
    for turn in turns:
        assert 0 < turn["voice_to_voice_secs"] < 5, turns


async def test_a_webhook_tool_runs_and_its_result_reaches_the_model(
    realtime_server, realtime_api, api, webhook_receiver
):
    tool = {
        "name": "get_hours",
        "description": "Opening hours for a day",
        "parameters": {
            "type": "object",
            "properties": {"day": {"type": "string", "enum": ["monday", "tuesday"]}},
            "required": ["day"],
        },
        "type": "webhook",
        "url": webhook_receiver.url("/hours"),
    }
    agent = realtime_agent(api, tools=[tool])
    realtime_api.script(ToolCall("get_hours", {"day": "tuesday"}), "On Tuesday we open at ten.")
    webhook_receiver.received.clear()
    async with SessionClient(agent_ws(realtime_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await ask(client, "When do you open on Tuesday?")
        await end(client)

    # Offered to the model from the session's start, in the Realtime API's tool shape.
    [offered] = realtime_api.sessions[-1]["tools"]
    assert (offered["type"], offered["name"]) == ("function", "get_hours")
    assert offered["parameters"]["properties"] == tool["parameters"]["properties"]
    [hook] = webhook_receiver.received
    assert hook["path"] == "/hours" and json.loads(hook["body"]) == {"day": "tuesday"}
    assert hook["headers"]["X-Switchboard-Session"] == ready["session_id"]
    # The result went back as the call's output, and the model was asked to go on.
    [output] = realtime_api.function_outputs
    assert json.loads(output["output"]) == {"ok": True}
    kinds = [e["type"] for e in realtime_api.received]
    assert kinds.index("response.create") > kinds.index("conversation.item.create")
    assert client.of_type("transcript.agent")[0]["text"] == "On Tuesday we open at ten."

    wait_for_status(api, ready["session_id"], "completed")
    items = transcript(api, ready["session_id"])
    # Pipecat writes a realtime caller's turn once the response it led to ends, so the turn's
    # entry may be stored after the tool's; its timestamp (the turn's start) comes first.
    by_speaker = {i["speaker"]: i for i in items}
    assert sorted(by_speaker) == ["AGENT", "TOOL", "USER"] and len(items) == 3, items
    assert by_speaker["USER"]["timestamp"] < by_speaker["TOOL"]["timestamp"]
    assert "tuesday" in by_speaker["USER"]["content"].lower()
    entry = json.loads(by_speaker["TOOL"]["content"])
    assert entry["name"] == "get_hours" and entry["arguments"] == {"day": "tuesday"}


async def test_caller_speech_stops_the_agent_and_the_cut_off_turn_is_kept(
    realtime_server, realtime_api, api
):
    realtime_api.script(LONG_REPLY, "Okay, go ahead.")
    agent = realtime_agent(api)
    async with SessionClient(agent_ws(realtime_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.stream(speech("What are your opening hours?", tail_secs=1.0))
        await client.wait_for("agent.speech.started", timeout=60)
        await asyncio.sleep(2.0)
        barged_at = time.monotonic()
        barge = asyncio.create_task(client.stream(speech("Sorry, one question.", tail_secs=1.5)))
        cut_off = await client.wait_for("transcript.agent", timeout=15)
        stopped = await client.wait_for("agent.speech.stopped", timeout=15)
        await barge
        await client.wait_for("transcript.agent", timeout=60, count=2)
        await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        await end(client)

    # The provider's server VAD heard the caller: it cancelled the reply, the agent fell silent
    # within a moment, and the client truncated the reply to what had played.
    first, second = realtime_api.responses
    assert first["status"] == "cancelled" and second["status"] == "completed"
    assert stopped["_at"] - barged_at < 1.5
    reply_audio = sum(n for at, n in client.audio_log if at < stopped["_at"] + 0.3) / 2 / 16000
    assert 1.5 < reply_audio < 4.0, reply_audio
    [truncation] = realtime_api.truncations
    assert 1500 < truncation["audio_end_ms"] < truncation["audio_ms"], truncation

    assert cut_off["interrupted"] is True
    assert cut_off["text"] and LONG_REPLY.startswith(cut_off["text"].rstrip(",.")), cut_off
    assert len(cut_off["text"]) < len(LONG_REPLY) / 2
    wait_for_status(api, ready["session_id"], "completed")
    items = transcript(api, ready["session_id"])
    agent_turns = [(i["content"], i["interrupted"]) for i in items if i["speaker"] == "AGENT"]
    assert agent_turns == [(cut_off["text"], True), ("Okay, go ahead.", False)], items
    assert [i["speaker"] for i in items] == ["USER", "AGENT", "USER", "AGENT"], items
    barge_ins = wait_for_status(api, ready["session_id"], "completed")["latency"]["interruptions"]
    assert len(barge_ins) == 1 and barge_ins[0]["stop_secs"] < 1.5, barge_ins


async def test_a_phone_call_reaches_the_realtime_model_at_8_khz(realtime_server, realtime_api, api):
    answer = "We open at nine tomorrow morning."
    realtime_api.script(answer)
    agent = realtime_agent(api)
    session_id, reply = await phone_question(api, agent["id"], "What time do you open tomorrow?")

    [played] = realtime_api.responses
    assert len(reply) / 2 / 8000 == pytest.approx(played["audio_ms"] / 1000, abs=0.3)
    assert rms(reply) > 300
    wait_for_status(api, session_id, "completed")
    items = transcript(api, session_id)
    assert [i["speaker"] for i in items] == ["USER", "AGENT"], items
    assert "tomorrow" in items[0]["content"].lower() and items[1]["content"] == answer


async def test_typed_turns_reach_the_model(realtime_server, realtime_api, api):
    realtime_api.script("No, we are closed on Sundays.", "At nine.", "Yes, at the front desk.")
    agent = realtime_agent(api)
    async with SessionClient(agent_ws(realtime_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await typed_spoken_typed(client)

    sent = [
        c["text"]
        for e in realtime_api.of_type("conversation.item.create")
        for c in e["item"]["content"]
    ]
    assert sent == ["Are you open on Sunday?", "Can I pay by card?"], sent
    assert [r["status"] for r in realtime_api.responses] == ["completed"] * 3
    wait_for_status(api, ready["session_id"], "completed")
    items = transcript(api, ready["session_id"])
    assert [(i["speaker"], i["content"]) for i in items if i["speaker"] == "AGENT"] == [
        ("AGENT", "No, we are closed on Sundays."),
        ("AGENT", "At nine."),
        ("AGENT", "Yes, at the front desk."),
    ]
    users = [i["content"] for i in items if i["speaker"] == "USER"]
    assert users[0] == "Are you open on Sunday?" and users[2] == "Can I pay by card?", users
    assert "monday" in users[1].lower(), users


async def test_the_goodbye_is_said_before_the_call_ends(realtime_server, realtime_api, api):
    # The answer to the turn past the limit is long: the goodbye is asked for while it plays.
    realtime_api.script("We open at nine.", LONG_REPLY, "Thank you for calling. Goodbye!")
    agent = realtime_agent(api, max_turns=1)
    async with SessionClient(agent_ws(realtime_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await ask(client, "When do you open?")
        await client.stream(speech("And when do you close?", tail_secs=1.0))
        ended = await client.wait_for("session.ended", timeout=60)

    assert ended["reason"] == "max_turns", ended
    # The server VAD answers the turn past the limit itself; then the goodbye is said, whole,
    # and only then does the call end.
    assert [(r["transcript"], r["status"]) for r in realtime_api.responses] == [
        ("We open at nine.", "completed"),
        (LONG_REPLY, "completed"),
        ("Thank you for calling. Goodbye!", "completed"),
    ]
    assert client.of_type("agent.speech.stopped")[-1]["_at"] <= ended["_at"]
    [told] = realtime_api.of_type("conversation.item.create")
    assert "Thank you for calling. Goodbye!" in told["item"]["content"][0]["text"]
    wait_for_status(api, ready["session_id"], "completed")
    agent_turns = [
        i["content"] for i in transcript(api, ready["session_id"]) if i["speaker"] == "AGENT"
    ]
    assert agent_turns[-1] == "Thank you for calling. Goodbye!", agent_turns
