"""Per-session usage from Pipecat's usage metrics, priced with the pipeline's price table.

Prices are USD per unit, as provider → model → unit in the pipeline config's `pricing`
(`SWITCHBOARD_PRICING` overrides entries). Units: `audio_minute` (STT), `input_mtok`,
`output_mtok`, `cache_read_mtok`, `cache_write_mtok` (LLM, per million tokens), `kchar`
(TTS, per thousand characters) and `minute` (telephony, model `voice`); a realtime
(speech-to-speech) stage prices its text tokens as an LLM does and its audio tokens by
`audio_input_mtok` and `audio_output_mtok`. A service or unit with no price costs zero; its
usage is still reported.
"""

from typing import Any, Literal

from pipecat.frames.frames import MetricsFrame
from pipecat.metrics.metrics import LLMUsageMetricsData, STTUsageMetricsData, TTSUsageMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pydantic import BaseModel

from pipelines.config import PipelineConfig

Pricing = dict[str, dict[str, dict[str, float]]]


class CostLine(BaseModel):
    stage: Literal["stt", "llm", "tts", "realtime", "telephony"]
    provider: str
    model: str | None
    usage: dict[str, float]
    """`audio_seconds`; `input_tokens`, `output_tokens`, `cache_read_tokens`, `cache_write_tokens`
    (and `audio_input_tokens`, `audio_output_tokens` for realtime); `characters`; or `minutes`."""
    amount: float


class SessionCostOut(BaseModel):
    """What a finished session cost, in USD, with a line per stage and provider."""

    currency: str
    total: float
    breakdown: list[CostLine]


class UsageObserver(BaseObserver):
    """Adds up one call's STT audio seconds, LLM tokens and TTS characters."""

    def __init__(self, **kwargs):
        super().__init__(observe_every_push=False, **kwargs)
        self.stt_audio_seconds = 0.0
        self.llm_tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
        """Text tokens (input net of the cache)."""
        self.audio_tokens = {"audio_input": 0, "audio_output": 0}
        """A realtime service's audio tokens (input net of the cache), not in `llm_tokens`."""
        self.tts_characters = 0
        self.models: dict[str, str] = {}
        """The model each stage reported, by stage (`stt`, `llm`, `tts`)."""

    async def on_push_frame(self, data: FramePushed):
        frame = data.frame
        if not isinstance(frame, MetricsFrame):
            return
        for item in frame.data:
            if isinstance(item, STTUsageMetricsData):
                self.stt_audio_seconds += item.value.audio_seconds
                self._model("stt", item.model)
            elif isinstance(item, LLMUsageMetricsData):
                usage = item.value
                cache_read = usage.cache_read_input_tokens or 0
                cache_write = usage.cache_creation_input_tokens or 0
                # Prompt tokens are net of the cache for some providers (Anthropic) and gross
                # for others (OpenAI); the total always counts the cached ones once.
                audio_in = (usage.input_audio_tokens or 0) - (
                    usage.cache_read_input_audio_tokens or 0
                )
                audio_out = usage.output_audio_tokens or 0
                self.llm_tokens["input"] += max(
                    usage.total_tokens
                    - usage.completion_tokens
                    - cache_read
                    - cache_write
                    - audio_in,
                    0,
                )
                self.llm_tokens["output"] += usage.completion_tokens - audio_out
                self.audio_tokens["audio_input"] += audio_in
                self.audio_tokens["audio_output"] += audio_out
                self.llm_tokens["cache_read"] += cache_read
                self.llm_tokens["cache_write"] += cache_write
                self._model("llm", item.model)
            elif isinstance(item, TTSUsageMetricsData):
                self.tts_characters += item.value
                self._model("tts", item.model)

    def _model(self, stage: str, model: str | None) -> None:
        if model:
            self.models[stage] = model


def merged_pricing(config: PipelineConfig, overrides: Pricing) -> Pricing:
    pricing = {
        provider: {model: dict(units) for model, units in models.items()}
        for provider, models in config.pricing.items()
    }
    for provider, models in overrides.items():
        for model, units in models.items():
            pricing.setdefault(provider, {}).setdefault(model, {}).update(units)
    return pricing


def session_cost(
    config: PipelineConfig,
    pricing: Pricing,
    usage: UsageObserver,
    *,
    connection_type: str,
    duration_secs: float | None,
) -> dict[str, Any]:
    """`{"currency", "total", "breakdown": [{stage, provider, model, usage, amount}]}`."""
    lines = []
    if config.stt:
        lines.append(
            _line(
                pricing,
                "stt",
                config.stt.service,
                usage.models.get("stt") or config.stt.options.get("model"),
                {"audio_minute": usage.stt_audio_seconds / 60},
                {"audio_seconds": round(usage.stt_audio_seconds, 3)},
            )
        )
    thinking = config.llm or config.realtime
    if thinking:
        tokens = usage.llm_tokens if config.llm else {**usage.llm_tokens, **usage.audio_tokens}
        lines.append(
            _line(
                pricing,
                "llm" if config.llm else "realtime",
                thinking.service,
                usage.models.get("llm") or thinking.options.get("model"),
                {f"{k}_mtok": v / 1e6 for k, v in tokens.items()},
                {f"{k}_tokens": v for k, v in tokens.items()},
            )
        )
    if config.tts:
        lines.append(
            _line(
                pricing,
                "tts",
                config.tts.service,
                usage.models.get("tts") or config.tts.options.get("model"),
                {"kchar": usage.tts_characters / 1000},
                {"characters": usage.tts_characters},
            )
        )
    if connection_type in pricing and duration_secs is not None:
        minutes = duration_secs / 60
        lines.append(
            _line(
                pricing,
                "telephony",
                connection_type,
                "voice",
                {"minute": minutes},
                {"minutes": round(minutes, 4)},
            )
        )
    return {
        "currency": "USD",
        "total": round(sum(line["amount"] for line in lines), 6),
        "breakdown": lines,
    }


def _line(
    pricing: Pricing,
    stage: str,
    provider: str,
    model: str | None,
    quantities: dict[str, float],
    shown: dict[str, Any],
) -> dict[str, Any]:
    prices = pricing.get(provider, {}).get(str(model), {})
    amount = sum(quantity * prices.get(unit, 0.0) for unit, quantity in quantities.items())
    return {
        "stage": stage,
        "provider": provider,
        "model": model,
        "usage": shown,
        "amount": round(amount, 6),
    }
