"""Call cost (app/cost.py): usage added up from Pipecat's metrics, priced per stage and provider."""

import pytest
from pipecat.frames.frames import MetricsFrame, TextFrame
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    STTUsage,
    STTUsageMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from app.cost import UsageObserver, merged_pricing, session_cost
from pipelines.config import PipelineCatalog

pytestmark = pytest.mark.storage_free

PRICING = {
    "deepgram": {"nova-3": {"audio_minute": 0.0060}},
    "anthropic": {
        "claude-x": {
            "input_mtok": 3.0,
            "output_mtok": 15.0,
            "cache_read_mtok": 0.30,
            "cache_write_mtok": 3.75,
        }
    },
    "cartesia": {"sonic-2": {"kchar": 0.03}},
    "twilio": {"voice": {"minute": 0.0085}},
}


@pytest.fixture(scope="module")
def cloud():
    """The shipped cloud pipeline config (Deepgram, Anthropic, Cartesia)."""
    return PipelineCatalog().get("cloud")


async def observe(observer: UsageObserver, *frames) -> None:
    processor = FrameProcessor()
    for frame in frames:
        await observer.on_push_frame(
            FramePushed(processor, processor, frame, FrameDirection.DOWNSTREAM, 0)
        )


def llm_usage(model, prompt, completion, total, cache_read=None, cache_write=None):
    return LLMUsageMetricsData(
        processor="llm",
        model=model,
        value=LLMTokenUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cache_read_input_tokens=cache_read,
            cache_creation_input_tokens=cache_write,
        ),
    )


async def test_usage_adds_up_and_counts_cached_tokens_once():
    observer = UsageObserver()
    await observe(
        observer,
        MetricsFrame(
            data=[
                STTUsageMetricsData(
                    processor="stt", model="nova-3", value=STTUsage(audio_seconds=30)
                ),
                # Net of the cache (Anthropic): 100 uncached + 400 read + 50 written, 20 out.
                llm_usage("claude-x", 100, 20, 570, cache_read=400, cache_write=50),
            ]
        ),
        MetricsFrame(
            data=[
                STTUsageMetricsData(
                    processor="stt", model="nova-3", value=STTUsage(audio_seconds=15)
                ),
                # Gross of the cache (OpenAI): 300 prompt tokens of which 200 cached, 10 out.
                llm_usage("claude-x", 300, 10, 310, cache_read=200),
                TTSUsageMetricsData(processor="tts", model="sonic-2", value=1200),
            ]
        ),
        TextFrame("not a metrics frame"),
    )
    assert observer.stt_audio_seconds == 45
    assert observer.llm_tokens == {"input": 200, "output": 30, "cache_read": 600, "cache_write": 50}
    assert observer.tts_characters == 1200
    assert observer.models == {"stt": "nova-3", "llm": "claude-x", "tts": "sonic-2"}


async def test_each_stage_is_priced_from_its_reported_model(cloud):
    observer = UsageObserver()
    await observe(
        observer,
        MetricsFrame(
            data=[
                STTUsageMetricsData(
                    processor="stt", model="nova-3", value=STTUsage(audio_seconds=90)
                ),
                llm_usage("claude-x", 1000, 200, 2200, cache_read=1000),
                TTSUsageMetricsData(processor="tts", model="sonic-2", value=500),
            ]
        ),
    )
    cost = session_cost(cloud, PRICING, observer, connection_type="twilio", duration_secs=120)
    by_stage = {line["stage"]: line for line in cost["breakdown"]}
    assert by_stage["stt"] == {
        "stage": "stt",
        "provider": "deepgram",
        "model": "nova-3",
        "usage": {"audio_seconds": 90},
        "amount": 0.009,  # 1.5 min at 0.006
    }
    assert by_stage["llm"]["usage"] == {
        "input_tokens": 1000,
        "output_tokens": 200,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 0,
    }
    assert by_stage["llm"]["amount"] == pytest.approx(0.003 + 0.003 + 0.0003)
    assert by_stage["tts"]["amount"] == pytest.approx(0.015)  # 0.5 kchar at 0.03
    assert by_stage["telephony"] == {
        "stage": "telephony",
        "provider": "twilio",
        "model": "voice",
        "usage": {"minutes": 2.0},
        "amount": 0.017,
    }
    assert cost["currency"] == "USD"
    assert cost["total"] == pytest.approx(sum(line["amount"] for line in cost["breakdown"]))


async def test_unpriced_usage_costs_nothing_but_is_still_reported(cloud):
    observer = UsageObserver()
    await observe(
        observer,
        MetricsFrame(data=[TTSUsageMetricsData(processor="tts", model="sonic-9", value=4000)]),
    )
    cost = session_cost(cloud, PRICING, observer, connection_type="websocket", duration_secs=60)
    tts = next(line for line in cost["breakdown"] if line["stage"] == "tts")
    assert tts["model"] == "sonic-9" and tts["usage"] == {"characters": 4000}
    assert tts["amount"] == 0
    assert cost["total"] == 0
    # No telephony line: a WebSocket call has no per-minute price, whatever its length.
    assert [line["stage"] for line in cost["breakdown"]] == ["stt", "llm", "tts"]


async def test_a_stage_that_reported_no_model_is_priced_as_configured(cloud):
    observer = UsageObserver()
    observer.stt_audio_seconds = 60
    configured = cloud.stt.options["model"]
    pricing = {**PRICING, "deepgram": {configured: {"audio_minute": 0.0060}}}
    cost = session_cost(cloud, pricing, observer, connection_type="twilio", duration_secs=None)
    stt = cost["breakdown"][0]
    assert (stt["model"], stt["amount"]) == (configured, 0.006)
    # The call's length is unknown: no telephony line rather than a made-up one.
    assert "telephony" not in [line["stage"] for line in cost["breakdown"]]


def test_overrides_merge_into_the_config_prices_without_changing_them(cloud):
    before = cloud.pricing["anthropic"]["claude-sonnet-4-5"]["input_mtok"]
    merged = merged_pricing(
        cloud,
        {
            "anthropic": {"claude-sonnet-4-5": {"input_mtok": 2.5}},
            "openai": {"gpt-x": {"input_mtok": 1.0}},
        },
    )
    sonnet = merged["anthropic"]["claude-sonnet-4-5"]
    assert sonnet["input_mtok"] == 2.5 and sonnet["output_mtok"] == 15.0  # other units kept
    assert merged["openai"] == {"gpt-x": {"input_mtok": 1.0}}
    assert merged["twilio"] == cloud.pricing["twilio"]
    assert cloud.pricing["anthropic"]["claude-sonnet-4-5"]["input_mtok"] == before
