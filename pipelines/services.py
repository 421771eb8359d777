"""Service factories: a stage's `service:` name in a config → a Pipecat service.

Local services reuse the process-wide models from `pipelines/models.py`; the
subclasses below exist only to hand Pipecat's services a shared model instead of
letting each call load its own.
"""

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language

from pipelines import models
from pipelines.config import PipelineConfig, StageConfig, resolve_path
from pipelines.first_clause import FirstClauseTextAggregator
from pipelines.whisper import SharedWhisperSTTService


@dataclass
class ServiceContext:
    """What a factory may need to know about the call it builds for."""

    system_prompt: str
    voice_id: str
    """The provider's voice id (already mapped from the agent's voice name)."""
    language: str = "en"


class SharedSileroOnnxModel(SileroOnnxModel):
    """Silero's per-stream state around a process-wide ONNX session."""

    def __init__(self, session):
        self.session = session
        self.reset_states()
        self.sample_rates = [8000, 16000]


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """`SileroVADAnalyzer` that reuses the shared session instead of loading one per call."""

    def __init__(self, *, params: VADParams | None = None):
        VADAnalyzer.__init__(self, params=params)
        self._model = SharedSileroOnnxModel(models.silero_session())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0


class SharedSmartTurnAnalyzerV3(LocalSmartTurnAnalyzerV3):
    """`LocalSmartTurnAnalyzerV3` over the shared ONNX session, predicting on the process's
    low-priority model threads instead of a thread of its own (see `models.background_executor`)."""

    def __init__(self, **kwargs):
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = False
        self._session = models.smart_turn_session()

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        return models.background_executor()

    async def completion(self) -> TurnMetricsData | None:
        """Smart Turn's verdict on the caller's speech so far, keeping it buffered (unlike
        `analyze_end_of_turn`, which drops it once complete) so it can be asked again."""
        loop = asyncio.get_running_loop()
        _, metrics = await loop.run_in_executor(
            self._model_executor, self._process_speech_segment, list(self._audio_buffer)
        )
        return metrics


class SharedPiperTTSService(PiperTTSService):
    """`PiperTTSService` speaking with a process-wide `PiperVoice`, and starting each reply
    with its first clause (Piper synthesizes a chunk of text whole, so a shorter first
    chunk is heard sooner)."""

    def __init__(self, *, voice, settings: PiperTTSService.Settings, **kwargs):
        TTSService.__init__(
            self, push_start_frame=True, push_stop_frames=True, settings=settings, **kwargs
        )
        self._voice = voice
        self._text_aggregator = FirstClauseTextAggregator(language=self._text_aggregator.language)


def _silero(stage: StageConfig, ctx: ServiceContext) -> VADAnalyzer:
    return SharedSileroVADAnalyzer(params=VADParams(**stage.options))


def _smart_turn_v3(stage: StageConfig, ctx: ServiceContext) -> BaseSmartTurn:
    return SharedSmartTurnAnalyzerV3()


def _whisper(stage: StageConfig, ctx: ServiceContext):
    options = dict(stage.options)
    device = options.pop("device", "cpu")
    compute_type = options.pop("compute_type", "int8")
    # Segmented Whisper has no streaming first-token figure; this is its p99 on a CPU.
    ttfs_p99_latency = options.pop("ttfs_p99_latency", 0.6)
    return SharedWhisperSTTService(
        beam_size=options.pop("beam_size", 5),
        device=device,
        compute_type=compute_type,
        settings=WhisperSTTService.Settings(language=Language(ctx.language), **options),
        ttfs_p99_latency=ttfs_p99_latency,
    )


def _piper(stage: StageConfig, ctx: ServiceContext):
    model_dir = resolve_path(stage.options["model_dir"])
    return SharedPiperTTSService(
        voice=models.piper_voice(model_dir, ctx.voice_id),
        settings=PiperTTSService.Settings(voice=ctx.voice_id),
    )


def _openai(stage: StageConfig, ctx: ServiceContext):
    from pipecat.services.openai.llm import OpenAILLMService

    options = dict(stage.options)
    return OpenAILLMService(
        base_url=options.pop("base_url"),
        api_key=options.pop("api_key", None) or _env_key(stage),
        settings=OpenAILLMService.Settings(system_instruction=ctx.system_prompt, **options),
    )


def _anthropic(stage: StageConfig, ctx: ServiceContext):
    from anthropic import AsyncAnthropic
    from pipecat.services.anthropic.llm import AnthropicLLMService

    options = dict(stage.options)
    api_key = _env_key(stage)
    client = AsyncAnthropic(
        api_key=api_key,
        base_url=options.pop("base_url", None) or None,
        timeout=float(options.pop("timeout_secs", 20)),
        max_retries=int(options.pop("max_retries", 1)),
    )
    return AnthropicLLMService(
        api_key=api_key,
        client=client,
        settings=AnthropicLLMService.Settings(system_instruction=ctx.system_prompt, **options),
    )


def _deepgram(stage: StageConfig, ctx: ServiceContext):
    from pipecat.services.deepgram.stt import DeepgramSTTService

    options = dict(stage.options)
    base_url = options.pop("base_url", None) or ""
    return DeepgramSTTService(
        api_key=_env_key(stage),
        base_url=base_url,
        settings=DeepgramSTTService.Settings(language=Language(ctx.language), **options),
    )


def _cartesia(stage: StageConfig, ctx: ServiceContext):
    from pipecat.services.cartesia.tts import CartesiaTTSService

    options = dict(stage.options)
    return CartesiaTTSService(
        api_key=_env_key(stage),
        url=options.pop("url"),
        settings=CartesiaTTSService.Settings(
            voice=ctx.voice_id, language=Language(ctx.language), **options
        ),
    )


def _env_key(stage: StageConfig) -> str | None:
    return os.environ.get(stage.api_key_env) if stage.api_key_env else None


def _canned_stt(stage: StageConfig, ctx: ServiceContext):
    from pipelines.canned import CannedSTTService

    return CannedSTTService(text=stage.options.get("text", "Hello."), ttfs_p99_latency=0.01)


def _canned_tts(stage: StageConfig, ctx: ServiceContext):
    from pipelines.canned import CannedTTSService

    return CannedTTSService()


FACTORIES: dict[str, Callable[[StageConfig, ServiceContext], Any]] = {
    "silero": _silero,
    "smart_turn_v3": _smart_turn_v3,
    "whisper": _whisper,
    "piper": _piper,
    "openai": _openai,
    "anthropic": _anthropic,
    "deepgram": _deepgram,
    "cartesia": _cartesia,
    "canned_stt": _canned_stt,
    "canned_tts": _canned_tts,
}


def create(stage: StageConfig, ctx: ServiceContext):
    """Build the service a stage names."""
    try:
        factory = FACTORIES[stage.service]
    except KeyError:
        raise ValueError(
            f"unknown service '{stage.service}' (known: {sorted(FACTORIES)})"
        ) from None
    return factory(stage, ctx)


def preload(config: PipelineConfig) -> None:
    """Build each of a config's services once, so the first call pays neither for loading
    models nor for importing service modules. Stages lacking credentials are skipped."""
    for voice_id in config.tts.voices.values():
        ctx = ServiceContext(system_prompt="", voice_id=voice_id, language="en")
        for stage in config.stages():
            if not (stage.api_key_env and not os.environ.get(stage.api_key_env)):
                create(stage, ctx)
