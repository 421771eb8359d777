"""The `gemini_live` example config end to end: Pipecat's Gemini Live service in place of STT,
LLM and TTS, against a local server speaking the Live API's BidiGenerateContent WebSocket as
the google-genai client uses it (over TLS, as that client insists), in real calls over the
session WebSocket with the caller's speech synthesized by Piper."""

import asyncio
import json
import time

import pytest

from app.client import SessionClient
from tests.audio import rms, speech
from tests.fakes.gemini_live import FakeGeminiLive
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.tls import LoopbackCertificate
from tests.helpers.calls import (
    agent_ws,
    ask,
    end,
    transcript,
    typed_spoken_typed,
    wait_for_cost,
    wait_for_recording,
    wait_for_status,
    wav_samples,
)
from tests.helpers.post_call import ANALYSIS, analysis_requests, wait_for_analysis
from tests.helpers.servers import ROOT, TEST_PIPELINES, make_agent, start_server
from tests.helpers.twilio import phone_question

EXAMPLES = ROOT / "examples" / "pipelines"
LONG_REPLY = (
    "We are open every weekday from nine in the morning until five in the afternoon, "
    "and on Saturdays from ten until two, but we are closed on Sundays and on public holidays."
)
PRICES = {"input": 0.50, "output": 2.00, "audio_input": 3.00, "audio_output": 12.00}
"""The example config's gemini-3.8-live prices, USD per million tokens."""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return LoopbackCertificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def gemini(certificate):
    fake = FakeGeminiLive(certificate).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gemini_server(tmp_path_factory, gemini, certificate, scripted_llm):
    env = {
        "SWITCHBOARD_PIPELINES_PATH": json.dumps([str(TEST_PIPELINES), str(EXAMPLES)]),
        "GOOGLE_API_KEY": gemini.api_key,
        "GEMINI_BASE_URL": gemini.base_url,
        "SSL_CERT_FILE": str(certificate.cert_path),
        "GEMINI_OPENAI_BASE_URL": scripted_llm.url,  # the analysis LLM
    }
    server = start_server(tmp_path_factory.mktemp("gemini"), preload=["gemini_live"], env=env)
    yield server
    server.stop()


@pytest.fixture
def api(gemini_server, gemini):
    gemini.reset()
    with gemini_server.client() as client:
        yield client


async def test_a_tool_is_called_and_the_answer_spoken_with_both_sides_stored(
    gemini_server, gemini, api, webhook_receiver, llm
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
    answer = "On Tuesday we open at ten."
    gemini.script(ToolCall("get_hours", {"day": "tuesday"}), answer)
    analysis = {**ANALYSIS, "custom": {}}
    llm.script_oneshot(json.dumps(analysis), when=answer)
    webhook_receiver.received.clear()
    agent = make_agent(
        api,
        pipeline="gemini_live",
        voice_id="puck",
        greeting="",
        first_speaker="user",
        tools=[tool],
    )
    async with SessionClient(agent_ws(gemini_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await ask(client, "When do you open on Tuesday?")
        await end(client)

    # The session Pipecat set up: the agent's prompt, voice and tools, both transcriptions,
    # Gemini's server VAD with the config's silence; one connection (no reconnect for tools).
    [setup] = gemini.setups
    assert gemini.connections == ["v1beta"]
    assert setup["model"] == "models/gemini-3.8-live"
    assert setup["systemInstruction"]["parts"][0]["text"] == agent["system_prompt"]
    speech_config = setup["generationConfig"]["speechConfig"]
    assert speech_config["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Puck"
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert "inputAudioTranscription" in setup and "outputAudioTranscription" in setup
    detection = setup["realtimeInputConfig"]["automaticActivityDetection"]
    assert detection["silenceDurationMs"] == 500
    [declared] = setup["tools"][0]["functionDeclarations"]
    assert declared["name"] == "get_hours"

    # The tool ran against the webhook, and its result went back with the call's id.
    [hook] = webhook_receiver.received
    assert hook["path"] == "/hours" and json.loads(hook["body"]) == {"day": "tuesday"}
    [response] = gemini.function_responses
    assert response["name"] == "get_hours" and response["response"] == {"ok": True}

    heard = client.of_type("transcript.user")[0]["text"]
    assert "tuesday" in heard.lower(), heard
    spoken = client.of_type("transcript.agent")[0]
    assert (spoken["text"], spoken["interrupted"]) == (answer, False)
    [played] = gemini.answers
    assert len(client.agent_audio) / 2 / 16000 == pytest.approx(played["audio_ms"] / 1000, abs=0.3)
    assert rms(bytes(client.agent_audio)) > 300

    session = wait_for_cost(api, ready["session_id"])
    items = transcript(api, ready["session_id"])
    by_speaker = {i["speaker"]: i for i in items}
    assert sorted(by_speaker) == ["AGENT", "TOOL", "USER"] and len(items) == 3, items
    assert (by_speaker["USER"]["content"], by_speaker["AGENT"]["content"]) == (heard, answer)
    assert json.loads(by_speaker["TOOL"]["content"])["arguments"] == {"day": "tuesday"}

    # Cost from Gemini's usage metadata: text and audio tokens, in and out.
    [line] = session["cost"]["breakdown"]
    usage = played["usage"]
    details = {
        kind: {d["modality"]: d["tokenCount"] for d in usage[f"{kind}TokensDetails"]}
        for kind in ("prompt", "response")
    }
    tokens = {
        "input": details["prompt"]["TEXT"],
        "output": details["response"]["TEXT"],
        "audio_input": details["prompt"]["AUDIO"],
        "audio_output": details["response"]["AUDIO"],
    }
    assert tokens["audio_input"] > 0 and tokens["audio_output"] > 0
    assert (line["stage"], line["provider"], line["model"]) == (
        "realtime",
        "gemini_live",
        "gemini-3.8-live",
    )
    assert line["usage"] == {
        "input_tokens": tokens["input"],
        "output_tokens": tokens["output"],
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "audio_input_tokens": tokens["audio_input"],
        "audio_output_tokens": tokens["audio_output"],
    }
    expected = sum(tokens[unit] * price / 1e6 for unit, price in PRICES.items())
    assert line["amount"] == pytest.approx(expected, abs=1e-6) and expected > 0

    # Voice-to-voice, from the local VAD's end of the caller's speech to the agent's audio.
    [turn] = session["latency"]["turns"]
    assert 0 < turn["voice_to_voice_secs"] < 5, session["latency"]
    # Analysed by the config's text model, from the stored transcript.
    assert wait_for_analysis(api, ready["session_id"])["result"] == analysis
    [request] = analysis_requests(llm, answer)
    assert heard in json.dumps(request["messages"])
    # Recorded as any call: the caller on the left channel, the agent on the right.
    wait_for_recording(api, ready["session_id"], "available")
    recording = api.get(f"/v1/sessions/{ready['session_id']}/recording")
    samples = wav_samples(recording.content)
    assert rms(samples[:, 0].tobytes()) > 100 and rms(samples[:, 1].tobytes()) > 100


async def test_the_greeting_is_said_and_caller_speech_cuts_the_agent_off(
    gemini_server, gemini, api
):
    greeting = "Hello, thanks for calling."
    gemini.script(greeting, LONG_REPLY, "Okay, go ahead.")
    agent = make_agent(api, pipeline="gemini_live", voice_id="kore", greeting=greeting)
    async with SessionClient(agent_ws(gemini_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.stream(speech("What are your opening hours?", tail_secs=1.0))
        await client.wait_for("agent.speech.started", timeout=60, count=2)
        await asyncio.sleep(2.0)
        barged_at = time.monotonic()
        barge = asyncio.create_task(client.stream(speech("Sorry, one question.", tail_secs=1.5)))
        await client.wait_for("input.speech.started", timeout=15, count=2)
        cut_off = await client.wait_for("transcript.agent", timeout=15, count=2)
        stopped = await client.wait_for("agent.speech.stopped", timeout=15, count=2)
        await barge
        await client.wait_for("transcript.agent", timeout=60, count=3)
        await client.wait_for("agent.speech.stopped", timeout=30, count=3)
        await end(client)

    # The greeting was asked of the model as a line to say, and said first.
    [told, *_] = gemini.of_kind("client_content")
    assert greeting in told["turns"][-1]["parts"][0]["text"]
    assert client.of_type("transcript.agent")[0]["text"] == greeting

    # Gemini's VAD heard the caller over the agent: it stopped the answer (`interrupted`), and
    # the agent fell silent within a moment, keeping what it had said.
    assert [a["status"] for a in gemini.answers] == ["completed", "interrupted", "completed"]
    assert stopped["_at"] - barged_at < 1.5
    assert cut_off["interrupted"] is True
    assert cut_off["text"] and LONG_REPLY.startswith(cut_off["text"].rstrip(",.")), cut_off
    assert len(cut_off["text"]) < len(LONG_REPLY) / 2
    session = wait_for_status(api, ready["session_id"], "completed")
    items = transcript(api, ready["session_id"])
    agent_turns = [(i["content"], i["interrupted"]) for i in items if i["speaker"] == "AGENT"]
    assert agent_turns == [
        (greeting, False),
        (cut_off["text"], True),
        ("Okay, go ahead.", False),
    ], items
    assert [i["speaker"] for i in items] == ["AGENT", "USER", "AGENT", "USER", "AGENT"], items
    assert 0 < session["latency"]["greeting_secs"] < 5, session["latency"]
    [barge_in] = session["latency"]["interruptions"]
    assert barge_in["stop_secs"] < 1.5, barge_in


async def test_typed_turns_reach_the_model(gemini_server, gemini, api):
    gemini.script("No, we are closed on Sundays.", "At nine.", "Yes, at the front desk.")
    agent = make_agent(
        api, pipeline="gemini_live", voice_id="puck", greeting="", first_speaker="user"
    )
    async with SessionClient(agent_ws(gemini_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await typed_spoken_typed(client)

    typed = [
        part["text"]
        for content in gemini.of_kind("client_content")
        for turn in content.get("turns", [])
        for part in turn["parts"]
    ]
    assert typed == ["Are you open on Sunday?", "Can I pay by card?"], typed
    assert [a["status"] for a in gemini.answers] == ["completed"] * 3
    wait_for_status(api, ready["session_id"], "completed")
    items = transcript(api, ready["session_id"])
    assert [i["content"] for i in items if i["speaker"] == "AGENT"] == [
        "No, we are closed on Sundays.",
        "At nine.",
        "Yes, at the front desk.",
    ]
    users = [i["content"] for i in items if i["speaker"] == "USER"]
    assert users[0] == "Are you open on Sunday?" and users[2] == "Can I pay by card?", users
    assert "monday" in users[1].lower(), users


async def test_a_phone_call_reaches_gemini_at_8_khz(gemini_server, gemini, api):
    answer = "We open at nine tomorrow morning."
    gemini.script(answer)
    agent = make_agent(
        api, pipeline="gemini_live", voice_id="puck", greeting="", first_speaker="user"
    )
    session_id, reply = await phone_question(api, agent["id"], "What time do you open tomorrow?")

    assert gemini.audio_rates == {8000}  # the carrier's audio as it came, never resampled
    [played] = gemini.answers
    assert len(reply) / 2 / 8000 == pytest.approx(played["audio_ms"] / 1000, abs=0.3)
    assert rms(reply) > 300
    wait_for_status(api, session_id, "completed")
    items = transcript(api, session_id)
    assert [i["speaker"] for i in items] == ["USER", "AGENT"], items
    assert "tomorrow" in items[0]["content"].lower() and items[1]["content"] == answer


async def test_a_refused_key_ends_the_call_with_provider_error(gemini_server, gemini, api):
    agent = make_agent(api, pipeline="gemini_live", voice_id="puck", greeting="Hello.")
    key, gemini.api_key = gemini.api_key, "a-key-the-server-does-not-have"
    rejected = gemini.rejected
    try:
        async with SessionClient(agent_ws(gemini_server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=30)
            ended = await client.wait_for("session.ended", timeout=30)
    finally:
        gemini.api_key = key
    assert ended["reason"] == "provider_error" and gemini.rejected == rejected + 1
    assert ended["_at"] - ready["_at"] < 5  # at once, not after the greeting's wait
    session = wait_for_status(api, ready["session_id"], "completed")
    assert session["end_reason"] == "provider_error"
