"""The example configs in `examples/pipelines/` end to end: Pipecat's own AssemblyAI, ElevenLabs,
OpenAI STT/TTS and OpenAI-compatible LLM services against local servers that speak each
provider's wire protocol, in real calls over the session WebSocket."""

import json

import pytest
from pipecat.services.openai.llm import OpenAILLMService

from app.client import SessionClient
from pipelines import services
from pipelines.config import PipelineCatalog
from tests.audio import rms, speech
from tests.fakes.assemblyai import FakeAssemblyAI
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.openai_api import FakeOpenAI
from tests.helpers.calls import agent_ws, transcript, wait_for_cost, wait_for_status
from tests.helpers.servers import ROOT, TEST_PIPELINES, make_agent, start_server
from tests.helpers.twilio import phone_question

EXAMPLES = ROOT / "examples" / "pipelines"
RACHEL = "21m00Tcm4TlvDq8ikWAM"


@pytest.fixture(scope="module")
def providers():
    fakes = FakeAssemblyAI().start(), FakeElevenLabs().start(), FakeOpenAI().start()
    yield fakes
    for fake in fakes:
        fake.stop()


@pytest.fixture(scope="module")
def services_server(tmp_path_factory, providers):
    assemblyai, elevenlabs, openai = providers
    env = {
        "SWITCHBOARD_PIPELINES_PATH": json.dumps([str(TEST_PIPELINES), str(EXAMPLES)]),
        "ASSEMBLYAI_API_KEY": assemblyai.api_key,
        "ASSEMBLYAI_URL": assemblyai.url,
        "ELEVENLABS_API_KEY": elevenlabs.api_key,
        "ELEVENLABS_URL": elevenlabs.url,
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.url,
        "OLLAMA_BASE_URL": openai.url,
    }
    server = start_server(
        tmp_path_factory.mktemp("services"),
        preload=["assemblyai_elevenlabs", "openai_voice", "ollama"],
        env=env,
    )
    yield server
    server.stop()


@pytest.fixture
def services_api(services_server, providers):
    providers[2].reset()
    with services_server.client() as client:
        yield client


async def _call(server, agent: dict, *, said: str | None = None, typed: str | None = None):
    """One exchange: the caller says (or types) something, the agent answers and falls silent.
    Returns the client and the session id."""
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        if said:
            await client.stream(speech(said))
            await client.stream_silence(1.5)
            await client.wait_for("transcript.user", timeout=30)
        else:
            await client.send_event({"type": "input.text", "text": typed})
        await client.wait_for("transcript.agent", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    return client, ready["session_id"]


def _cost_line(api, session_id: str, stage: str) -> dict:
    breakdown = wait_for_cost(api, session_id)["cost"]["breakdown"]
    return next(line for line in breakdown if line["stage"] == stage)


async def test_assemblyai_streaming_hears_the_caller(services_server, services_api, providers):
    assemblyai, _elevenlabs, openai = providers
    openai.script("On Monday we open at nine.")
    agent = make_agent(services_api, pipeline="assemblyai_elevenlabs", voice_id="rachel")
    audio_before = assemblyai.audio_secs
    client, session_id = await _call(
        services_server, agent, said="What time do you open on Monday?"
    )

    heard = client.of_type("transcript.user")[0]["text"]
    assert "monday" in heard.lower() and "open" in heard.lower(), heard
    assert heard[0].isupper()  # the formatted final, not the raw one
    assert heard in str(openai.requests[-1]["messages"])
    # Pipecat's turn mode: its VAD and Smart Turn end the turn, forcing AssemblyAI's endpoint.
    query = assemblyai.connections[-1]
    assert query["speech_model"] == "universal-streaming-english"
    assert (query["sample_rate"], query["encoding"], query["format_turns"]) == (
        "16000",
        "pcm_s16le",
        "true",
    )
    assert query["end_of_turn_confidence_threshold"] == "1.0"
    kinds = [m["type"] for m in assemblyai.received]
    assert "ForceEndpoint" in kinds and kinds[-1] == "Terminate"

    stt = _cost_line(services_api, session_id, "stt")
    audio_secs = assemblyai.audio_secs - audio_before
    assert (stt["provider"], stt["model"]) == ("assemblyai", "universal-streaming-english")
    assert stt["usage"]["audio_seconds"] == pytest.approx(audio_secs, abs=1.0) and audio_secs > 1
    assert stt["amount"] == pytest.approx(stt["usage"]["audio_seconds"] / 60 * 0.0025, abs=1e-6)


async def test_elevenlabs_speaks_the_reply(services_server, services_api, providers):
    _assemblyai, elevenlabs, openai = providers
    reply = "Yes, we have a free slot on Friday."
    openai.script(reply)
    agent = make_agent(services_api, pipeline="assemblyai_elevenlabs", voice_id="rachel")
    characters_before, spoken_before = elevenlabs.characters, len(elevenlabs.spoken)
    client, session_id = await _call(
        services_server, agent, typed="Do you have a free slot on Friday?"
    )

    # The agent's words come back from ElevenLabs' alignment, timed with its audio.
    assert client.of_type("transcript.agent")[0]["text"] == reply
    assert len(client.agent_audio) > 16000 * 2 * 1.0 and rms(bytes(client.agent_audio)) > 300
    query = elevenlabs.connections[-1]
    assert (query["voice_id"], query["model_id"], query["output_format"]) == (
        RACHEL,
        "eleven_flash_v2_5",
        "pcm_16000",
    )
    assert "".join(elevenlabs.spoken[spoken_before:]).strip() == reply
    assert any(m.get("close_context") for m in elevenlabs.messages)

    tts = _cost_line(services_api, session_id, "tts")
    characters = elevenlabs.characters - characters_before
    assert (tts["provider"], tts["usage"]["characters"]) == ("elevenlabs", characters)
    assert tts["amount"] == pytest.approx(characters / 1000 * 0.05, abs=1e-6)


async def test_a_phone_call_reaches_assemblyai_and_elevenlabs_at_8_khz(
    services_server, services_api, providers
):
    assemblyai, elevenlabs, openai = providers
    openai.script("We open at nine tomorrow morning.")
    agent = make_agent(services_api, pipeline="assemblyai_elevenlabs", voice_id="rachel")
    session_id, reply = await phone_question(
        services_api, agent["id"], "What time do you open tomorrow morning?"
    )
    assert len(reply) > 8000 * 2 * 1.0 and rms(reply) > 300

    # Both providers take the carrier's 8 kHz: neither direction is resampled.
    assert assemblyai.connections[-1]["sample_rate"] == "8000"
    assert elevenlabs.connections[-1]["output_format"] == "pcm_8000"
    wait_for_status(services_api, session_id, "completed")
    items = transcript(services_api, session_id)
    assert [i["speaker"] for i in items] == ["USER", "AGENT"], items
    assert "tomorrow" in items[0]["content"].lower()
    assert items[1]["content"] == "We open at nine tomorrow morning."


async def test_openai_transcription_hears_the_caller(services_server, services_api, providers):
    *_, openai = providers
    openai.script("We are open until six tonight.")
    agent = make_agent(services_api, pipeline="openai_voice", voice_id="coral")
    transcriptions_before = len(openai.transcriptions)
    client, session_id = await _call(services_server, agent, said="How late are you open tonight?")

    heard = client.of_type("transcript.user")[0]["text"]
    assert "tonight" in heard.lower(), heard
    requests = openai.transcriptions[transcriptions_before:]
    assert requests and {(r["model"], r["language"]) for r in requests} == {
        ("gpt-4o-transcribe", "en")
    }
    assert heard in str(openai.requests[-1]["messages"])

    stt = _cost_line(services_api, session_id, "stt")
    assert (stt["provider"], stt["model"]) == ("openai_stt", "gpt-4o-transcribe")
    assert stt["usage"]["audio_seconds"] > 1
    assert stt["amount"] == pytest.approx(stt["usage"]["audio_seconds"] / 60 * 0.006, abs=1e-6)


async def test_openai_speech_speaks_the_reply(services_server, services_api, providers):
    *_, openai = providers
    reply = "Your appointment is confirmed for Tuesday."
    openai.script(reply)
    agent = make_agent(services_api, pipeline="openai_voice", voice_id="coral")
    speech_before = len(openai.speech_requests)
    client, session_id = await _call(services_server, agent, typed="Please confirm Tuesday.")

    assert client.of_type("transcript.agent")[0]["text"] == reply
    # 24 kHz from the API, resampled to the session's 16 kHz: about as long as the speech.
    expected = len(speech(reply, 16000, 0.0))
    assert 0.8 * expected < len(client.agent_audio) < 1.5 * expected
    assert rms(bytes(client.agent_audio)) > 300
    requests = openai.speech_requests[speech_before:]
    assert [(r["model"], r["voice"], r["response_format"]) for r in requests] == [
        ("tts-1", "coral", "pcm")
    ]
    assert requests[0]["input"] == reply

    tts = _cost_line(services_api, session_id, "tts")
    assert (tts["provider"], tts["usage"]["characters"]) == ("openai_tts", len(reply))
    assert tts["amount"] == pytest.approx(len(reply) / 1000 * 0.015, abs=1e-6)


async def test_an_ollama_config_talks_to_an_openai_compatible_server(
    services_server, services_api, providers
):
    *_, openai = providers
    openai.script("Hello from the local model.")
    agent = make_agent(services_api, pipeline="ollama")
    client, _session_id = await _call(services_server, agent, typed="Hello?")
    assert client.of_type("transcript.agent")[0]["text"] == "Hello from the local model."
    request = openai.requests[-1]
    assert request["model"] == "llama3.2" and request["max_tokens"] == 200
    assert request["messages"][-1] == {"role": "user", "content": "Hello?"}


@pytest.mark.storage_free
@pytest.mark.parametrize(
    "name, base_url, model",
    [
        ("ollama", "http://127.0.0.1:11434/v1/", "llama3.2"),
        ("vllm", "http://127.0.0.1:8000/v1/", "meta-llama/Llama-3.1-8B-Instruct"),
        ("groq", "https://api.groq.com/openai/v1/", "llama-3.3-70b-versatile"),
    ],
)
def test_openai_compatible_examples_build_pipecats_openai_llm(monkeypatch, name, base_url, model):
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    for var in ("OLLAMA_BASE_URL", "VLLM_BASE_URL", "GROQ_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    config = PipelineCatalog([EXAMPLES]).get(name)
    llm = services.create(config.llm, services.ServiceContext(system_prompt="Hi.", voice_id="x"))
    assert isinstance(llm, OpenAILLMService)
    assert (str(llm._client.base_url), llm._settings.model) == (base_url, model)
    assert config.missing_env() == []


async def test_a_rejected_assemblyai_key_ends_the_call_with_provider_error(
    services_server, services_api, providers
):
    assemblyai, *_ = providers
    agent = make_agent(
        services_api, pipeline="assemblyai_elevenlabs", voice_id="rachel", greeting="Hello."
    )
    key, assemblyai.api_key = assemblyai.api_key, "a-key-the-server-does-not-have"
    rejected = assemblyai.rejected
    try:
        async with SessionClient(agent_ws(services_server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=30)
            ended = await client.wait_for("session.ended", timeout=30)
    finally:
        assemblyai.api_key = key
    assert ended["reason"] == "provider_error" and assemblyai.rejected > rejected
    assert (
        f"session {ready['session_id']}: provider failure in AssemblyAISTTService"
        in services_server.log()
    )
