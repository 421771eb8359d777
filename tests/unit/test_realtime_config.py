"""A pipeline config is either the cascade (vad, stt, llm, tts) or one `realtime` stage; the
shipped `realtime` config, its cost line (text and audio tokens) and its analysis LLM; the
`gemini_live` example."""

import re
from pathlib import Path

import pytest
from pipecat.frames.frames import MetricsFrame
from pipecat.metrics.metrics import LLMTokenUsage, LLMUsageMetricsData
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pydantic import ValidationError

from app.analysis import analyse
from app.cost import UsageObserver, session_cost
from pipelines import services
from pipelines.config import PipelineCatalog, PipelineConfig

pytestmark = pytest.mark.storage_free
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"

REALTIME = {
    "service": "openai_realtime",
    "options": {"model": "gpt-realtime"},
    "voices": {"marin": "marin"},
}
CASCADE = {
    "vad": {"service": "silero"},
    "stt": {"service": "whisper"},
    "llm": {"service": "openai"},
    "tts": {"service": "piper", "voices": {"joe": "en_US-joe-medium"}},
}


def test_a_realtime_stage_takes_the_place_of_stt_llm_and_tts():
    config = PipelineConfig(name="s2s", realtime=REALTIME)
    assert config.voices == {"marin": "marin"}
    assert [s.service for s in config.stages()] == ["openai_realtime"]
    # A local VAD may mark the caller's speech beside it (for a service that reports none).
    marked = PipelineConfig(name="s2s", realtime=REALTIME, vad=CASCADE["vad"])
    assert [s.service for s in marked.stages()] == ["silero", "openai_realtime"]


@pytest.mark.parametrize(
    "fields, error",
    [
        ({**CASCADE, "realtime": REALTIME}, "a realtime pipeline has no stt, llm, tts stage"),
        ({"realtime": REALTIME, "turn": {"service": "smart_turn_v3"}}, "has no turn stage"),
        ({k: v for k, v in CASCADE.items() if k != "tts"}, "missing stages: tts"),
        ({}, "missing stages: vad, stt, llm, tts (or one realtime stage)"),
    ],
)
def test_a_config_is_one_path_or_the_other(fields, error):
    with pytest.raises(ValidationError, match=re.escape(error)):
        PipelineConfig(name="bad", **fields)


async def test_realtime_cost_prices_text_and_audio_tokens():
    config = PipelineCatalog().get("realtime")
    usage = UsageObserver()
    # As Pipecat reports a Realtime response.done: input gross of the cache, audio within.
    tokens = LLMTokenUsage(
        prompt_tokens=1000,
        completion_tokens=300,
        total_tokens=1300,
        cache_read_input_tokens=200,
        input_audio_tokens=600,
        output_audio_tokens=250,
        cache_read_input_audio_tokens=100,
    )
    metrics = MetricsFrame(
        data=[LLMUsageMetricsData(processor="rt", model="gpt-realtime", value=tokens)]
    )
    source = FrameProcessor()
    await usage.on_push_frame(FramePushed(source, source, metrics, FrameDirection.DOWNSTREAM, 0))
    cost = session_cost(
        config, config.pricing, usage, connection_type="websocket", duration_secs=10
    )
    [line] = cost["breakdown"]
    assert line["stage"] == "realtime" and line["model"] == "gpt-realtime"
    assert line["usage"] == {
        "input_tokens": 300,  # 1000 - 200 cached - 500 audio
        "output_tokens": 50,
        "cache_read_tokens": 200,
        "cache_write_tokens": 0,
        "audio_input_tokens": 500,
        "audio_output_tokens": 250,
    }
    expected = (300 * 4.0 + 50 * 16.0 + 200 * 0.40 + 500 * 32.0 + 250 * 64.0) / 1e6
    assert line["amount"] == pytest.approx(expected) and cost["total"] == pytest.approx(expected)


async def test_a_realtime_config_without_an_analysis_llm_says_so():
    config = PipelineConfig(name="s2s", realtime=REALTIME)
    result, error, attempts, _model = await analyse(config, "USER: hi", [])
    assert (result, attempts) == (None, 0)
    assert error == "pipeline 's2s' has no analysis LLM: set `analysis:` in it"
    assert PipelineCatalog().get("realtime").analysis is not None


def test_the_realtime_config_needs_only_its_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = PipelineCatalog().get("realtime")
    assert config.missing_env() == ["OPENAI_API_KEY"]
    assert services.phone_input_rate(config) == 8000
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert PipelineCatalog().get("realtime").missing_env() == []


def test_the_gemini_live_example_builds_pipecats_gemini_live_service(monkeypatch):
    from pipelines.gemini_live import CallerFirstGeminiLiveService

    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_BASE_URL", raising=False)
    config = PipelineCatalog([EXAMPLES]).get("gemini_live")
    assert config.missing_env() == ["GOOGLE_API_KEY"]
    assert services.phone_input_rate(config) == 8000
    assert config.realtime and config.vad and config.vad.service == "silero"
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    ctx = services.ServiceContext(system_prompt="Be brief.", voice_id="Kore", language="fr")
    gemini = services.create(config.realtime, ctx)
    assert isinstance(gemini, CallerFirstGeminiLiveService)
    assert gemini._settings.voice == "Kore" and gemini._settings.language == "fr-FR"
    assert gemini._settings.vad and gemini._settings.vad.silence_duration_ms == 500
    assert gemini._http_options.base_url == "https://generativelanguage.googleapis.com/"
