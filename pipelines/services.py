"""Service factories: a stage's `service:` name in a config → a Pipecat service.

Local services reuse the process-wide models from `pipelines/models.py`, handed to
Pipecat's services by `pipelines/pipecat_compat.py` instead of letting each call load its own.
"""

import dataclasses
import difflib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.types import NOT_GIVEN, NotGiven

from pipelines import models, pipecat_compat, realtime
from pipelines.config import PipelineConfig, RealtimeStageConfig, StageConfig, resolve_path
from pipelines.first_clause import FirstClauseTextAggregator
from pipelines.spoken_words import AudioTimedWords
from pipelines.whisper import SharedWhisperSTTService


@dataclass
class ServiceContext:
    """What a factory may need to know about the call it builds for."""

    system_prompt: str
    voice_id: str
    """The provider's voice id (already mapped from the agent's voice name)."""
    language: str = "en"
    tools: ToolsSchema | NotGiven = NOT_GIVEN
    """The agent's tools, for a service that takes them itself (a realtime one)."""


FROM_AGENT = {
    "system_instruction": "the agent's system_prompt",
    "voice": "the agent's voice_id (mapped by the stage's voices)",
    "language": "the agent's language",
}
"""Service settings each call takes from its agent, never from a config's options."""


@dataclass(frozen=True)
class Takes:
    """The `options:` a service factory takes: its own (`own`, read by the factory) and the
    fields of the Pipecat settings the rest are passed to (`settings`, as `module:Class.Attr`,
    imported when a config is checked), less those the factory sets itself (`set_here`) and
    those from the agent (`FROM_AGENT`)."""

    own: tuple[str, ...] = ()
    settings: str | None = None
    set_here: tuple[str, ...] = ()

    def names(self) -> set[str]:
        names = set(self.own)
        if self.settings:
            module, _, path = self.settings.partition(":")
            target: Any = importlib.import_module(module)
            for part in path.split("."):
                target = getattr(target, part)
            if dataclasses.is_dataclass(target):
                fields = {f.name for f in dataclasses.fields(target)}
            else:
                fields = set(target.model_fields)
            names |= fields - set(self.set_here) - set(FROM_AGENT)
        return names


def takes(*own: str, settings: str | None = None, set_here: tuple[str, ...] = ()):
    """Declare the options a factory takes (see `Takes`), so a config naming one it doesn't
    is refused when it loads; an installed package's factory may declare its own too."""

    def declare(factory: Callable) -> Callable:
        setattr(factory, "takes", Takes(own, settings, set_here))  # noqa: B010
        return factory

    return declare


def option_problems(key: str, stage: StageConfig, factory: Callable) -> list[str]:
    """The stage's options its factory doesn't take, each naming the stage and the option
    (a factory that doesn't declare what it takes is not checked)."""
    declared: Takes | None = getattr(factory, "takes", None)
    if declared is None:
        return []
    try:
        known = declared.names()
    except (ImportError, AttributeError) as exc:
        return [f"{key}.service: '{stage.service}' can't be loaded: {exc}"]
    problems = []
    for name in stage.options:
        where = f"{key}.options.{name}"
        if name in known:
            continue
        if name in FROM_AGENT:
            problems.append(f"{where}: set from {FROM_AGENT[name]}, not from the config")
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(f"{where}: unknown option of service '{stage.service}'{hint}")
    return problems


@takes(settings="pipecat.audio.vad.vad_analyzer:VADParams")
def _silero(stage: StageConfig, ctx: ServiceContext) -> VADAnalyzer:
    return pipecat_compat.silero_vad_analyzer(models.silero_session(), VADParams(**stage.options))


@takes()
def _smart_turn_v3(stage: StageConfig, ctx: ServiceContext) -> BaseSmartTurn:
    return pipecat_compat.smart_turn_v3(models.smart_turn_session(), models.background_executor())


@takes(
    "device",
    "compute_type",
    "ttfs_p99_latency",
    "beam_size",
    settings="pipecat.services.whisper.stt:WhisperSTTService.Settings",
)
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


class AudioTimedPiperTTSService(AudioTimedWords, PiperTTSService):
    """Piper, its words timed from their audio (`AudioTimedWords`), so an interrupted reply
    keeps the words the caller heard."""


@takes("model_dir")
def _piper(stage: StageConfig, ctx: ServiceContext):
    model_dir = resolve_path(stage.options["model_dir"])
    tts = pipecat_compat.piper_tts_service(
        voice=models.piper_voice(model_dir, ctx.voice_id),
        settings=PiperTTSService.Settings(voice=ctx.voice_id),
        service_class=AudioTimedPiperTTSService,
        push_text_frames=False,
        # A sentence's words come once it is synthesized; on a loaded CPU that can take
        # longer than Pipecat's 3 s, which would end the reply's audio context and send
        # the words not yet timed all at once.
        stop_frame_timeout_s=10.0,
    )
    # Piper synthesizes a chunk of text whole: a shorter first chunk is heard sooner.
    pipecat_compat.set_tts_text_aggregator(
        tts, FirstClauseTextAggregator(language=tts.text_aggregation_language)
    )
    return tts


@takes("base_url", "api_key", settings="pipecat.services.openai.llm:OpenAILLMService.Settings")
def _openai(stage: StageConfig, ctx: ServiceContext):
    from pipecat.services.openai.llm import OpenAILLMService

    from pipelines.api_clients import SharedClientOpenAILLMService

    options = dict(stage.options)
    return SharedClientOpenAILLMService(
        base_url=options.pop("base_url"),
        api_key=options.pop("api_key", None) or _env_key(stage),
        settings=OpenAILLMService.Settings(system_instruction=ctx.system_prompt, **options),
    )


@takes("base_url", "api_key", settings="pipecat.services.openai.stt:OpenAISTTService.Settings")
def _openai_stt(stage: StageConfig, ctx: ServiceContext):
    """OpenAI's transcription API (`gpt-4o-transcribe`, `whisper-1`, ...), one request per
    utterance; `base_url` may name any server speaking it."""
    from pipecat.services.openai.stt import OpenAISTTService

    options = dict(stage.options)
    return OpenAISTTService(
        base_url=options.pop("base_url", None) or None,
        api_key=options.pop("api_key", None) or _env_key(stage),
        settings=OpenAISTTService.Settings(language=Language(ctx.language), **options),
    )


@takes("base_url", "api_key", settings="pipecat.services.openai.tts:OpenAITTSService.Settings")
def _openai_tts(stage: StageConfig, ctx: ServiceContext):
    """OpenAI's speech API (`gpt-4o-mini-tts`, `tts-1`, ...), one request per sentence."""
    from pipecat.services.openai._constants import OPENAI_SAMPLE_RATE
    from pipecat.services.openai.tts import OpenAITTSService

    options = dict(stage.options)
    return OpenAITTSService(
        base_url=options.pop("base_url", None) or None,
        api_key=options.pop("api_key", None) or _env_key(stage),
        # The API speaks 24 kHz only; the output transport resamples for the caller.
        sample_rate=OPENAI_SAMPLE_RATE,
        settings=OpenAITTSService.Settings(voice=ctx.voice_id, **options),
    )


@takes(
    "base_url",
    "timeout_secs",
    "max_retries",
    settings="pipecat.services.anthropic.llm:AnthropicLLMService.Settings",
)
def _anthropic(stage: StageConfig, ctx: ServiceContext):
    from anthropic import AsyncAnthropic
    from pipecat.services.anthropic.llm import AnthropicLLMService

    from pipelines.api_clients import shared_client

    options = dict(stage.options)
    api_key = _env_key(stage)
    base_url = options.pop("base_url", None) or None
    timeout = float(options.pop("timeout_secs", 20))
    max_retries = int(options.pop("max_retries", 1))
    client = shared_client(
        ("anthropic", api_key, base_url, timeout, max_retries),
        lambda: AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        ),
    )
    return AnthropicLLMService(
        api_key=api_key,  # type: ignore[arg-type]  # None when unset: the provider then refuses
        client=client,
        settings=AnthropicLLMService.Settings(system_instruction=ctx.system_prompt, **options),
    )


@takes("base_url", settings="pipecat.services.deepgram.stt:DeepgramSTTService.Settings")
def _deepgram(stage: StageConfig, ctx: ServiceContext):
    from pipecat.services.deepgram.stt import DeepgramSTTService

    options = dict(stage.options)
    base_url = options.pop("base_url", None) or ""
    return DeepgramSTTService(
        api_key=_env_key(stage),  # type: ignore[arg-type]  # None when unset: the provider refuses
        base_url=base_url,
        settings=DeepgramSTTService.Settings(language=Language(ctx.language), **options),
    )


@takes("url", settings="pipecat.services.cartesia.tts:CartesiaTTSService.Settings")
def _cartesia(stage: StageConfig, ctx: ServiceContext):
    from pipecat.services.cartesia.tts import CartesiaTTSService

    options = dict(stage.options)
    return CartesiaTTSService(
        api_key=_env_key(stage),  # type: ignore[arg-type]  # None when unset: the provider refuses
        url=options.pop("url"),
        settings=CartesiaTTSService.Settings(
            voice=ctx.voice_id, language=Language(ctx.language), **options
        ),
    )


@takes("url", settings="pipecat.services.assemblyai.stt:AssemblyAISTTService.Settings")
def _assemblyai(stage: StageConfig, ctx: ServiceContext):
    """AssemblyAI Universal-Streaming over its v3 WebSocket (`url`, default AssemblyAI's)."""
    from pipecat.services.assemblyai.stt import AssemblyAISTTService

    options = dict(stage.options)
    url = options.pop("url", None)
    return AssemblyAISTTService(
        api_key=_env_key(stage),  # type: ignore[arg-type]  # None when unset: the provider refuses
        **({"api_endpoint_base_url": url} if url else {}),
        settings=AssemblyAISTTService.Settings(language=Language(ctx.language), **options),
    )


@takes("url", settings="pipecat.services.elevenlabs.tts:ElevenLabsTTSService.Settings")
def _elevenlabs(stage: StageConfig, ctx: ServiceContext):
    """ElevenLabs over its multi-context WebSocket (`url`, default `wss://api.elevenlabs.io`)."""
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    options = dict(stage.options)
    url = options.pop("url", None)
    return ElevenLabsTTSService(
        api_key=_env_key(stage),  # type: ignore[arg-type]  # None when unset: the provider refuses
        **({"url": url} if url else {}),
        settings=ElevenLabsTTSService.Settings(
            voice=ctx.voice_id, language=Language(ctx.language), **options
        ),
    )


@takes(
    "url",
    "transcription_model",
    "turn_detection",
    settings="pipecat.services.openai.realtime.llm:OpenAIRealtimeLLMService.Settings",
    set_here=("session_properties",),
)
def _openai_realtime(stage: StageConfig, ctx: ServiceContext):
    assert isinstance(stage, RealtimeStageConfig)
    return realtime.openai_realtime(
        stage,
        api_key=_env_key(stage),
        system_prompt=ctx.system_prompt,
        voice=ctx.voice_id,
        language=ctx.language,
        tools=ctx.tools,
    )


@takes(
    "base_url",
    settings="pipecat.services.google.gemini_live.llm:GeminiLiveLLMService.Settings",
    set_here=("modalities",),
)
def _gemini_live(stage: StageConfig, ctx: ServiceContext):
    from pipelines.gemini_live import gemini_live

    assert isinstance(stage, RealtimeStageConfig)
    return gemini_live(
        stage,
        api_key=_env_key(stage),
        system_prompt=ctx.system_prompt,
        voice=ctx.voice_id,
        language=ctx.language,
        tools=ctx.tools,
    )


def _env_key(stage: StageConfig) -> str | None:
    return os.environ.get(stage.api_key_env) if stage.api_key_env else None


@takes("text")
def _canned_stt(stage: StageConfig, ctx: ServiceContext):
    from pipelines.canned import CannedSTTService

    return CannedSTTService(text=stage.options.get("text", "Hello."), ttfs_p99_latency=0.01)


@takes()
def _canned_tts(stage: StageConfig, ctx: ServiceContext):
    from pipelines.canned import CannedTTSService

    return CannedTTSService()


FACTORIES: dict[str, Callable[[StageConfig, ServiceContext], Any]] = {
    "silero": _silero,
    "smart_turn_v3": _smart_turn_v3,
    "whisper": _whisper,
    "piper": _piper,
    "openai": _openai,
    "openai_stt": _openai_stt,
    "openai_tts": _openai_tts,
    "anthropic": _anthropic,
    "deepgram": _deepgram,
    "cartesia": _cartesia,
    "assemblyai": _assemblyai,
    "elevenlabs": _elevenlabs,
    "openai_realtime": _openai_realtime,
    "gemini_live": _gemini_live,
    "canned_stt": _canned_stt,
    "canned_tts": _canned_tts,
}


NARROWBAND_RATE = 8000
NARROWBAND_SERVICES = frozenset(
    {
        "silero",
        "smart_turn_v3",
        "deepgram",
        "assemblyai",
        "openai_stt",
        "canned_stt",
        "openai_realtime",
        "gemini_live",
    }
)
"""Services that take a phone caller's 8 kHz audio as it is (Smart Turn brings a turn's audio to
its model's 16 kHz itself, OpenAI Realtime to its 24 kHz, Gemini Live resamples what it is sent);
Whisper needs 16 kHz."""


def phone_input_rate(config: PipelineConfig) -> int:
    """The pipeline's input rate on a phone call: the carriers' own 8 kHz when every service that
    hears the caller takes it, so the caller's audio is never resampled; else the config's rate."""
    hearing = [s for s in (config.vad, config.turn, config.stt, config.realtime) if s]
    if all(s.service in NARROWBAND_SERVICES for s in hearing):
        return NARROWBAND_RATE
    return config.audio_in_sample_rate


def create(stage: StageConfig, ctx: ServiceContext):
    """Build the service a stage names (built in, or from an installed package's entry point;
    a config naming neither does not load)."""
    from pipelines.registry import service_factories  # the registry imports this module

    factory = service_factories()[stage.service]
    assert callable(factory)  # a config naming a plugin that fails to import doesn't load
    return factory(stage, ctx)


def preload(config: PipelineConfig) -> None:
    """Build each of a config's services once, so the first call pays neither for loading
    models nor for importing service modules. Stages lacking credentials are skipped."""
    for voice_id in config.voices.values():
        ctx = ServiceContext(system_prompt="", voice_id=voice_id, language="en")
        for stage in config.stages():
            if not (stage.api_key_env and not os.environ.get(stage.api_key_env)):
                create(stage, ctx)
