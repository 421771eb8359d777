"""The `cloud` config end to end: the real Pipecat Deepgram, Anthropic and Cartesia services
against local servers that speak each provider's wire protocol, over the direct WebSocket and
Twilio Media Streams; and the `hybrid` config (local Whisper, Anthropic, Cartesia)."""

import asyncio
import json
import time

import pytest

from app.client import SessionClient
from pipelines.config import PipelineCatalog
from tests.audio import rms, speech
from tests.fakes.anthropic import Failure, FakeAnthropic, Stall
from tests.fakes.cartesia import FakeCartesia
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.twilio_client import TwilioMediaStreamsClient, ulaw_decode
from tests.helpers.calls import agent_ws, wait_for_cost, wait_for_status
from tests.helpers.servers import start_server

KATIE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
PRICE_OVERRIDE = {"cartesia": {"sonic-2": {"kchar": 0.05}}}


@pytest.fixture(scope="module")
def providers():
    fakes = FakeDeepgram().start(), FakeAnthropic().start(), FakeCartesia().start()
    yield fakes
    for fake in fakes:
        fake.stop()


def provider_env(
    deepgram: FakeDeepgram, anthropic: FakeAnthropic, cartesia: FakeCartesia
) -> dict[str, str]:
    return {
        "DEEPGRAM_API_KEY": deepgram.api_key,
        "DEEPGRAM_BASE_URL": deepgram.url,
        "ANTHROPIC_API_KEY": anthropic.api_key,
        "ANTHROPIC_BASE_URL": anthropic.url,
        "ANTHROPIC_TIMEOUT_SECS": "3",
        "CARTESIA_API_KEY": cartesia.api_key,
        "CARTESIA_URL": cartesia.url,
        "SWITCHBOARD_PRICING": json.dumps(PRICE_OVERRIDE),
    }


@pytest.fixture(scope="module")
def cloud_server(tmp_path_factory, providers):
    server = start_server(
        tmp_path_factory.mktemp("cloud"), preload=["cloud", "hybrid"], env=provider_env(*providers)
    )
    yield server
    server.stop()


@pytest.fixture
def cloud_api(cloud_server, providers):
    providers[1].reset()
    with cloud_server.client() as client:
        yield client


def cloud_agent(api, **fields) -> dict:
    body = {
        "name": "Cloud agent",
        "pipeline": "cloud",
        "voice_id": "katie",
        "system_prompt": "You are the receptionist of a dental clinic. Answer in one short sentence.",
        **fields,
    }
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 201, response.text
    return response.json()


HOURS_TOOL = {
    "name": "get_opening_hours",
    "description": "Opening hours for a day of the week",
    "parameters": {
        "type": "object",
        "properties": {"day": {"type": "string"}},
        "required": ["day"],
    },
}


async def test_conversation_with_a_tool_call(cloud_server, cloud_api, providers):
    deepgram, anthropic, cartesia = providers
    anthropic.script(
        ToolCall("get_opening_hours", {"day": "monday"}),
        "On Monday we open at nine in the morning.",
    )
    agent = cloud_agent(
        cloud_api, greeting="Hello, thanks for calling the clinic.", tools=[HOURS_TOOL]
    )
    async with SessionClient(agent_ws(cloud_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        greeting = await client.wait_for("transcript.agent", timeout=30)
        assert greeting["text"] == "Hello, thanks for calling the clinic."
        await client.wait_for("agent.speech.stopped", timeout=30)
        greeting_audio = len(client.agent_audio)
        assert greeting_audio > 16000 * 2 * 1.0 and rms(bytes(client.agent_audio)) > 300

        await client.stream(speech("What time do you open on Monday?"))
        await client.stream_silence(1.5)
        heard = await client.wait_for("transcript.user", timeout=30)
        call = await client.wait_for("tool.call", timeout=30)
        assert (call["name"], call["arguments"]) == ("get_opening_hours", {"day": "monday"})
        await client.send_event(
            {"type": "tool.result", "call_id": call["call_id"], "result": {"opens": "9:00"}}
        )
        reply = await client.wait_for("transcript.agent", timeout=30, count=2)
        await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        assert reply["text"] == "On Monday we open at nine in the morning."
        assert rms(bytes(client.agent_audio[greeting_audio:])) > 300
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    assert "monday" in heard["text"].lower() and "open" in heard["text"].lower(), heard
    # Deepgram: the configured model, streaming with interim results, at the pipeline's input rate.
    connection = deepgram.connections[-1]
    assert connection["model"] == "nova-3" and connection["interim_results"] == "true"
    assert connection["sample_rate"] == "16000" and connection["encoding"] == "linear16"
    # Anthropic: the system prompt (cached), the tool, then the tool's result sent back.
    first, second = anthropic.requests[-2:]
    assert first["stream"] is True and first["tools"][0]["name"] == "get_opening_hours"
    assert "dental clinic" in str(first["system"]) and "cache_control" in str(first["system"])
    tool_results = [
        b
        for m in second["messages"]
        for b in (m["content"] if isinstance(m["content"], list) else [])
        if b.get("type") == "tool_result"
    ]
    assert tool_results and "9:00" in str(tool_results[0]["content"])
    # Cartesia: the agent's voice, speaking what the agent said.
    assert {r["voice"]["id"] for r in cartesia.requests[-3:]} == {KATIE}
    assert "On Monday we open at nine in the morning." in " ".join(cartesia.transcripts())

    session = wait_for_status(cloud_api, ready["session_id"], "completed")
    assert session["end_reason"] == "caller_hangup"
    transcript = cloud_api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
    assert [t["speaker"] for t in transcript if t["speaker"] != "TOOL"] == [
        "AGENT",
        "USER",
        "AGENT",
    ]
    assert transcript[-1]["content"] == "On Monday we open at nine in the morning."


async def test_barge_in_cuts_the_cloud_agent_off(cloud_server, cloud_api, providers):
    _deepgram, anthropic, _cartesia = providers
    long_answer = (
        "Let me tell you everything about our opening hours. On Monday we open at eight in the morning "
        "and close at six in the evening. On Tuesday we open at nine and close at seven. On Wednesday "
        "we open at eight and close at five. On Thursday we open late, at ten, and close at eight."
    )
    anthropic.script(long_answer, "Sure, go ahead.")
    agent = cloud_agent(cloud_api)
    async with SessionClient(agent_ws(cloud_server, agent["id"])) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "What are your hours?"})
        await client.wait_for("agent.speech.started", timeout=30)
        await asyncio.sleep(1.5)
        assert not client.of_type("agent.speech.stopped")
        barge = asyncio.create_task(
            client.stream(speech("Wait, stop, I have a question.", tail_secs=1.5))
        )
        started = await client.wait_for("input.speech.started", timeout=10)
        await client.wait_for("agent.speech.stopped", timeout=10)
        await barge
        interrupted = await client.wait_for("transcript.agent", timeout=10)
        assert interrupted["interrupted"] is True and interrupted["text"] != long_answer, (
            client.events
        )
        # The barge-in may reach the transcript as one turn or, split at its pauses, as several
        # (a split-off "stop," can come back misheard), so any of its words will do.
        await client.wait_for("transcript.user", timeout=30, count=2)
        deadline = asyncio.get_running_loop().time() + 30
        barge_in_words = ("stop", "question")
        while not any(
            w in e["text"].lower()
            for e in client.of_type("transcript.user")[1:]
            for w in barge_in_words
        ):
            assert asyncio.get_running_loop().time() < deadline, client.of_type("transcript.user")
            await asyncio.sleep(0.1)
        next_reply = [e["_at"] for e in client.of_type("agent.speech.started")[1:]]
        window_end = next_reply[0] - 0.1 if next_reply else started["_at"] + 2.0
        late_audio = sum(
            size for at, size in client.audio_log if started["_at"] + 0.5 < at < window_end
        )
        assert late_audio == 0, late_audio
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)


async def test_dropped_stt_and_tts_connections_reconnect_within_the_call(
    cloud_server, cloud_api, providers
):
    deepgram, anthropic, cartesia = providers
    anthropic.script("We are open until six tonight.")
    agent = cloud_agent(cloud_api, greeting="Hello, clinic here.")
    async with SessionClient(agent_ws(cloud_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        stt_before, tts_before = len(deepgram.connections), cartesia.connections
        assert deepgram.drop_connections() >= 1 and cartesia.drop_connections() >= 1
        deadline = time.monotonic() + 20
        while (
            len(deepgram.connections) == stt_before or cartesia.connections == tts_before
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(deepgram.connections) > stt_before and cartesia.connections > tts_before

        await client.stream(speech("How late are you open tonight?"))
        await client.stream_silence(1.5)
        heard = await client.wait_for("transcript.user", timeout=30)
        reply = await client.wait_for("transcript.agent", timeout=30, count=2)
        await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        assert "tonight" in heard["text"].lower(), heard
        assert reply["text"] == "We are open until six tonight."
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    wait_for_status(cloud_api, ready["session_id"], "completed")


async def test_llm_failures_get_an_apology_then_end_the_call(cloud_server, cloud_api, providers):
    _deepgram, anthropic, _cartesia = providers
    # Each failed turn costs two requests: the client retries once.
    anthropic.script(
        Failure(529, "overloaded_error", "Overloaded"),
        Failure(529, "overloaded_error", "Overloaded"),
        "Yes, we take new patients.",
        Stall(10),
        Stall(10),
        Failure(500),
        Failure(500),
    )
    agent = cloud_agent(cloud_api)
    async with SessionClient(agent_ws(cloud_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "Do you take new patients?"})
        apology = await client.wait_for("transcript.agent", timeout=30)
        assert apology["text"].startswith("Sorry, I'm having trouble")
        await client.send_event({"type": "input.text", "text": "Do you take new patients?"})
        answer = await client.wait_for("transcript.agent", timeout=30, count=2)
        assert answer["text"] == "Yes, we take new patients."
        await client.send_event({"type": "input.text", "text": "And on Sundays?"})  # times out
        timed_out = await client.wait_for("transcript.agent", timeout=30, count=3)
        assert timed_out["text"].startswith("Sorry, I'm having trouble")
        await client.send_event({"type": "input.text", "text": "Hello?"})  # fails a third time
        ended = await client.wait_for("session.ended", timeout=60)
        assert ended["reason"] == "provider_error"
    session = wait_for_status(cloud_api, ready["session_id"], "completed")
    assert session["end_reason"] == "provider_error"
    log = cloud_server.log()
    assert f"session {ready['session_id']}: provider failure" in log


async def test_cost_is_the_usage_times_the_price_table(cloud_server, cloud_api, providers):
    deepgram, anthropic, cartesia = providers
    anthropic.script("We open at nine.", "You're welcome, goodbye.")
    agent = cloud_agent(cloud_api, greeting="Hello, clinic here.")
    usages_before, characters_before, audio_before = (
        len(anthropic.usages),
        cartesia.characters,
        deepgram.audio_secs,
    )
    async with SessionClient(agent_ws(cloud_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.stream(speech("When do you open tomorrow?"))
        await client.stream_silence(1.5)
        await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        await client.send_event({"type": "input.text", "text": "Thank you."})
        await client.wait_for("agent.speech.stopped", timeout=30, count=3)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    billed = anthropic.usages[usages_before:]
    characters, audio_secs = (
        cartesia.characters - characters_before,
        deepgram.audio_secs - audio_before,
    )

    wait_for_status(cloud_api, ready["session_id"], "completed")
    cost = wait_for_cost(cloud_api, ready["session_id"])["cost"]
    lines = {line["stage"]: line for line in cost["breakdown"]}
    assert (lines["stt"]["provider"], lines["llm"]["provider"], lines["tts"]["provider"]) == (
        "deepgram",
        "anthropic",
        "cartesia",
    )
    prices = PipelineCatalog().get("cloud").pricing
    llm, tts, stt = lines["llm"], lines["tts"], lines["stt"]
    assert llm["usage"] == {
        "input_tokens": sum(u["input_tokens"] for u in billed),
        "output_tokens": sum(u["output_tokens"] for u in billed),
        "cache_read_tokens": sum(u["cache_read_input_tokens"] for u in billed),
        "cache_write_tokens": 0,
    }
    assert llm["usage"]["cache_read_tokens"] > 0  # the system prompt was cached
    claude = prices["anthropic"][llm["model"]]
    assert llm["amount"] == pytest.approx(
        (
            llm["usage"]["input_tokens"] * claude["input_mtok"]
            + llm["usage"]["output_tokens"] * claude["output_mtok"]
            + llm["usage"]["cache_read_tokens"] * claude["cache_read_mtok"]
        )
        / 1e6,
        abs=1e-6,
    )
    assert tts["usage"]["characters"] == characters > 0
    assert tts["amount"] == pytest.approx(
        characters / 1000 * PRICE_OVERRIDE["cartesia"]["sonic-2"]["kchar"], abs=1e-6
    )
    assert stt["usage"]["audio_seconds"] == pytest.approx(audio_secs, abs=1.0) and audio_secs > 1
    assert stt["amount"] == pytest.approx(
        stt["usage"]["audio_seconds"] / 60 * prices["deepgram"][stt["model"]]["audio_minute"],
        abs=1e-6,
    )
    assert cost["currency"] == "USD"
    assert (
        cost["total"] == pytest.approx(llm["amount"] + tts["amount"] + stt["amount"], abs=1e-6)
        and cost["total"] > 0
    )


async def test_cloud_call_over_twilio_media_streams(cloud_server, cloud_api, providers):
    deepgram, anthropic, cartesia = providers
    anthropic.script("We open at nine tomorrow morning.")
    agent = cloud_agent(cloud_api, greeting="Hello, you have reached the clinic.")
    response = cloud_api.post(
        "/v1/sessions/twilio",
        json={"agentId": agent["id"], "from": "+15550001111", "to": "+15550002222"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    session_id = response.json()["session"]["session_id"]
    async with TwilioMediaStreamsClient.from_twiml(response.json()["twiml"]) as client:
        await client.wait_marks(1, timeout=30)  # the greeting has played
        greeting = ulaw_decode(bytes(client.agent_audio))
        assert len(greeting) > 8000 * 2 * 1.0 and rms(greeting) > 300
        await client.send_audio(speech("What time do you open tomorrow morning?", sample_rate=8000))
        await client.send_silence(1.5)
        await client.wait_marks(2, timeout=60)  # the answer has played
        reply = ulaw_decode(bytes(client.agent_audio)[len(greeting) // 2 :])
        assert len(reply) > 8000 * 2 * 0.5 and rms(reply) > 300
        await client.stop()
        await client.wait_closed(timeout=5)

    # Deepgram and Cartesia take 8 kHz: the caller's audio and the agent's go unresampled.
    assert deepgram.connections[-1]["sample_rate"] == "8000"
    assert cartesia.requests[-1]["output_format"]["sample_rate"] == 8000
    wait_for_status(cloud_api, session_id, "completed")
    session = wait_for_cost(cloud_api, session_id)
    assert session["end_reason"] == "caller_hangup" and session["connection_type"] == "twilio"
    items = cloud_api.get(f"/v1/sessions/{session_id}/transcript").json()["items"]
    assert [i["speaker"] for i in items] == ["AGENT", "USER", "AGENT"], items
    assert "open" in items[1]["content"].lower() and "tomorrow" in items[1]["content"].lower()
    assert items[2]["content"] == "We open at nine tomorrow morning."
    telephony = next(line for line in session["cost"]["breakdown"] if line["stage"] == "telephony")
    assert telephony["provider"] == "twilio"
    assert telephony["usage"]["minutes"] == pytest.approx(session["duration_secs"] / 60, abs=1e-3)
    minute_price = PipelineCatalog().get("cloud").pricing["twilio"]["voice"]["minute"]
    assert telephony["amount"] == pytest.approx(
        telephony["usage"]["minutes"] * minute_price, abs=1e-6
    )


async def test_hybrid_pipeline_local_whisper_with_claude_and_cartesia(
    cloud_server, cloud_api, providers
):
    deepgram, anthropic, cartesia = providers
    anthropic.script("Yes, we have a free slot on Friday.")
    agent = cloud_agent(cloud_api, pipeline="hybrid")
    dg_connections = len(deepgram.connections)
    async with SessionClient(agent_ws(cloud_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.stream(speech("Do you have a free slot on Friday?"))
        await client.stream_silence(1.5)
        heard = await client.wait_for("transcript.user", timeout=30)
        reply = await client.wait_for("transcript.agent", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        assert rms(bytes(client.agent_audio)) > 300
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    assert "friday" in heard["text"].lower()
    assert reply["text"] == "Yes, we have a free slot on Friday."
    assert len(deepgram.connections) == dg_connections  # Whisper heard the caller, not Deepgram
    assert "Yes, we have a free slot on Friday." in " ".join(cartesia.transcripts())
    wait_for_status(cloud_api, ready["session_id"], "completed")
    session = wait_for_cost(cloud_api, ready["session_id"])
    stt = next(line for line in session["cost"]["breakdown"] if line["stage"] == "stt")
    assert stt["provider"] == "whisper" and stt["amount"] == 0 and stt["usage"]["audio_seconds"] > 0


async def test_a_rejected_speech_provider_ends_the_call_with_provider_error(
    cloud_server, cloud_api, providers
):
    deepgram, _anthropic, _cartesia = providers
    agent = cloud_agent(cloud_api, greeting="Hello, clinic here.")
    key, deepgram.api_key = deepgram.api_key, "a-key-the-server-does-not-have"
    rejected = deepgram.rejected
    try:
        async with SessionClient(agent_ws(cloud_server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=30)
            ended = await client.wait_for("session.ended", timeout=30)
    finally:
        deepgram.api_key = key
    assert ended["reason"] == "provider_error" and deepgram.rejected > rejected
    assert rms(bytes(client.agent_audio)) > 300  # the caller heard why
    session = wait_for_status(cloud_api, ready["session_id"], "completed")
    assert session["end_reason"] == "provider_error"
    transcript = cloud_api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
    assert any(
        t["content"].startswith("I'm sorry, I'm having technical difficulties") for t in transcript
    ), transcript
    assert (
        f"session {ready['session_id']}: provider failure in DeepgramSTTService"
        in cloud_server.log()
    )
