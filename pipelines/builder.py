"""Turns a pipeline config + an agent + a transport into one call's Pipecat pipeline."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.extensions.voicemail.voicemail_detector import VoicemailDetector
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.llm_service import FunctionCallParams, LLMService
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.types import NOT_GIVEN, NotGiven

from pipelines import realtime, services
from pipelines.config import PipelineConfig
from pipelines.endpointing import POLICIES, AdaptiveTurnStopStrategy
from pipelines.registry import CallProcessors, build_processors
from pipelines.voicemail import MutedAfterVoicemail, VoicemailAction, build_detector
from processors.call_limits import InactivityMonitor, MaxDurationLimiter
from processors.client_events import ClientEventReceiver
from processors.context_summarizer import ContextSummarizer
from processors.heard_text import LateWordFilter
from processors.provider_errors import ProviderErrorMonitor
from processors.recording import CallRecorder
from processors.session_events import SessionEventEmitter
from processors.turn_limit import MaxTurnsLimiter

ToolHandler = Callable[[FunctionCallParams], Awaitable[None]]

GOODBYE = "Thank you for calling. Goodbye!"
TIME_UP_GOODBYE = "I'm sorry, we've reached the time limit for this call. Goodbye!"
STILL_THERE = "Are you still there?"
INACTIVITY_GOODBYE = "I haven't heard from you, so I'll end the call now. Goodbye!"


@dataclass
class ToolDefinition:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentSpec:
    """What the builder needs to know about the agent on this call."""

    system_prompt: str
    voice: str
    language: str = "en"
    tools: list[ToolDefinition] = field(default_factory=list)
    max_turns: int = 50
    history: list[dict[str, Any]] = field(default_factory=list)
    """Earlier messages to restore into the LLM context."""
    interruptible: bool = True
    """False: caller speech over the agent is heard and answered, but doesn't cut it off."""
    max_duration_secs: float | None = None
    inactivity_timeout_secs: float | None = None
    inactivity_action: str = "end_call"
    """`end_call`, or `prompt` (ask once whether the caller is there, then end)."""
    recording_path: Path | None = None
    """Where to write the call's stereo WAV; None records nothing."""
    recording_sample_rate: int = 16000
    llm_options: dict[str, Any] = field(default_factory=dict)
    """Overrides of the LLM stage's options for this call (e.g. `model`, `temperature`)."""
    endpointing: str | None = None
    """`fast`, `balanced` or `patient`; None takes the pipeline's `turn.endpointing`."""
    voicemail: VoicemailAction | None = None
    """An outbound call's answering-machine detection (cascade pipelines); None: none."""


@dataclass
class CallPipeline:
    """One call's pipeline and the processors the call wires events to."""

    pipeline: Pipeline
    llm: LLMService
    user_aggregator: LLMUserAggregator
    assistant_aggregator: LLMAssistantAggregator
    context_aggregator: LLMContextAggregatorPair
    events: SessionEventEmitter | None
    client_events: ClientEventReceiver | None
    provider_errors: ProviderErrorMonitor | None = None
    processors: CallProcessors = field(default_factory=CallProcessors)
    """The config's processors (`redact` rewrites what the call stores)."""
    voicemail: VoicemailDetector | None = None


def build_pipeline(
    config: PipelineConfig,
    agent: AgentSpec,
    transport: BaseTransport,
    *,
    tool_handler: ToolHandler | None = None,
    session_protocol: bool = False,
    extra_input: list[FrameProcessor] | None = None,
    extra_output: list[FrameProcessor] | None = None,
    processors: CallProcessors | None = None,
) -> CallPipeline:
    """Build: transport in → STT → user aggregator (VAD + turn detection) → turn limit →
    [context summarizer] → LLM (with the agent's tools) → TTS → [session events] →
    transport out → assistant aggregator, with the config's processors at their points.
    A `realtime` config hears, answers and speaks in one service in the LLM's place, its
    provider finding the caller's turns (`pipelines/realtime.py`).

    ``session_protocol`` adds the processors that speak the direct WebSocket event
    protocol; telephony transports leave it off. ``extra_input`` processors run right
    after the input transport, ``extra_output`` ones right before the output transport.
    ``processors``: the config's, already built when the transport took their audio filter
    and mixer (`CallProcessors.transport_params`); built here otherwise. With the agent's
    ``voicemail``, a cascade's STT is followed by the voicemail detector and its TTS by the
    detector's gate (`pipelines/voicemail.py`).
    """
    added = processors or build_processors(config)
    tools = _tools_schema(agent.tools, tool_handler)
    ctx = services.ServiceContext(
        system_prompt=agent.system_prompt,
        voice_id=config.voices[agent.voice],
        language=agent.language,
        tools=tools,
    )
    context = LLMContext(
        messages=list(agent.history),  # type: ignore[arg-type]  # stored OpenAI-format messages
        tools=tools,
    )
    provider_errors = ProviderErrorMonitor()
    events = SessionEventEmitter(interruptible=agent.interruptible) if session_protocol else None
    client_events = ClientEventReceiver() if session_protocol else None
    detector: VoicemailDetector | None = None
    if config.realtime:
        llm = services.create(config.realtime, ctx)
        # Typed turns go round the user aggregator, which would keep them from the service.
        hearing: list[FrameProcessor | None] = []
        typing: list[FrameProcessor | None] = [client_events]
        user_params = realtime.user_params(services.create(config.vad, ctx) if config.vad else None)
        speaking: list[FrameProcessor | None] = [
            realtime.SpokenPrompt(),
            llm,
            realtime.ServerVADFrames(realtime.silence_secs(config.realtime)),
        ]
    else:
        stt, llm, tts = _cascade_services(config, agent, ctx, provider_errors)
        if agent.voicemail:
            detector = _voicemail_detector(config, agent, ctx)
        hearing = [client_events, *added.at("before_stt"), stt, *added.at("after_stt"), detector]
        typing = []
        llm_stage = config.llm
        speaking = [
            ContextSummarizer(llm, llm_stage.summarize_after_tokens, llm_stage.max_request_tokens)
            if llm_stage and llm_stage.summarize_after_tokens
            else None,
            llm,
            *added.at("after_llm"),
            *added.at("before_tts"),
            tts,
            detector.gate() if detector else None,
        ]
        user_params = _local_turns(config, agent, ctx)
    user_params.user_mute_strategies = [
        *added.user_mute_strategies,
        *([MutedAfterVoicemail(detector)] if detector else []),
    ]
    aggregators = LLMContextAggregatorPair(context, user_params=user_params)

    @llm.event_handler("on_completion_timeout")
    async def on_llm_timeout(service):
        await provider_errors.llm_failed(service.name, "completion timed out")

    stages: list[FrameProcessor | None] = [
        transport.input(),
        *(extra_input or []),
        *added.at("after_input"),
        *hearing,
        aggregators.user(),
        *typing,
        MaxTurnsLimiter(agent.max_turns, GOODBYE),
        MaxDurationLimiter(agent.max_duration_secs, TIME_UP_GOODBYE)
        if agent.max_duration_secs
        else None,
        InactivityMonitor(
            agent.inactivity_timeout_secs,
            agent.inactivity_action,
            prompt=STILL_THERE,
            goodbye=INACTIVITY_GOODBYE,
        )
        if agent.inactivity_timeout_secs
        else None,
        provider_errors,
        *added.at("before_llm"),
        *speaking,
        events,
        *(extra_output or []),
        *added.at("before_output"),
        transport.output(),
        *added.at("after_output"),
        CallRecorder(agent.recording_path, agent.recording_sample_rate)
        if agent.recording_path
        else None,
        LateWordFilter(),
        aggregators.assistant(),
    ]
    return CallPipeline(
        pipeline=Pipeline([p for p in stages if p is not None]),
        llm=llm,
        user_aggregator=aggregators.user(),
        assistant_aggregator=aggregators.assistant(),
        context_aggregator=aggregators,
        events=events,
        client_events=client_events,
        provider_errors=provider_errors,
        processors=added,
        voicemail=detector,
    )


def build_announcement(
    config: PipelineConfig, voice: str, language: str, transport: BaseTransport
) -> Pipeline | None:
    """A pipeline that only speaks, in the agent's voice: what it is given as `TTSSpeakFrame`s
    (a warm transfer's summary to the person). None for a config without a TTS stage (realtime)."""
    if config.tts is None:
        return None
    ctx = services.ServiceContext(
        system_prompt="", voice_id=config.voices[voice], language=language
    )
    return Pipeline([transport.input(), services.create(config.tts, ctx), transport.output()])


def _cascade_services(
    config: PipelineConfig,
    agent: AgentSpec,
    ctx: services.ServiceContext,
    provider_errors: ProviderErrorMonitor,
) -> tuple[FrameProcessor, LLMService, FrameProcessor]:
    """The cascade's STT, LLM (with the agent's overrides of its options) and TTS."""
    assert config.stt and config.llm and config.tts  # PipelineConfig._one_path
    stt = services.create(config.stt, ctx)
    llm_stage = config.llm.model_copy(
        update={"options": {**config.llm.options, **agent.llm_options}}
    )
    llm = services.create(llm_stage, ctx)
    tts = services.create(config.tts, ctx)
    for speech_service in (stt, tts):

        @speech_service.event_handler("on_usable_changed")
        async def on_usable_changed(service, usable):
            if not usable:
                await provider_errors.service_unusable(service.name)

    return stt, llm, tts


def _voicemail_detector(
    config: PipelineConfig, agent: AgentSpec, ctx: services.ServiceContext
) -> VoicemailDetector:
    """The detector, its classifier a second instance of the cascade's LLM stage (no tools)."""
    assert config.llm and agent.voicemail
    classifier_ctx = services.ServiceContext(system_prompt="", voice_id=ctx.voice_id)
    classifier_llm = services.create(config.llm, classifier_ctx)
    return build_detector(classifier_llm, agent.voicemail)


def _local_turns(
    config: PipelineConfig, agent: AgentSpec, ctx: services.ServiceContext
) -> LLMUserAggregatorParams:
    """Turns found here: the VAD starts them, the turn detector (if any) ends them."""
    assert config.vad  # PipelineConfig._one_path
    stop_strategies: list[BaseUserTurnStopStrategy] | None = None
    if config.turn:
        stop_strategies = [
            AdaptiveTurnStopStrategy(
                turn_analyzer=services.create(config.turn, ctx),
                policy=POLICIES[agent.endpointing or config.turn.endpointing],
                transcript_confirms=config.turn.transcript_confirms,
            )
        ]
    return LLMUserAggregatorParams(
        vad_analyzer=services.create(config.vad, ctx),
        user_turn_strategies=UserTurnStrategies(
            start=_start_strategies(agent.interruptible), stop=stop_strategies
        ),
    )


def _start_strategies(interruptible: bool) -> list | None:
    """Pipecat's default turn starts; for a non-interruptible agent they start the
    caller's turn (so it is transcribed and answered) without interrupting the agent."""
    if interruptible:
        return None
    return [
        VADUserTurnStartStrategy(enable_interruptions=False),
        TranscriptionUserTurnStartStrategy(enable_interruptions=False),
    ]


def _tools_schema(
    tools: list[ToolDefinition], handler: ToolHandler | None
) -> ToolsSchema | NotGiven:
    if not tools:
        return NOT_GIVEN
    return ToolsSchema(
        standard_tools=[
            FunctionSchema(
                name=tool.name,
                description=tool.description,
                properties=tool.parameters.get("properties", {}),
                required=tool.parameters.get("required", []),
                handler=handler,
            )
            for tool in tools
        ]
    )
