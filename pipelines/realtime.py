"""The speech-to-speech path: one realtime service in place of STT, LLM and TTS.

Pipecat's `OpenAIRealtimeLLMService` (or `GeminiLiveLLMService`, `pipelines/gemini_live.py`)
streams the caller's audio to the provider, whose server VAD finds the caller's turns (OpenAI
proposes them to the user aggregator, which interrupts the agent on speech; Gemini interrupts
the agent itself), and plays the provider's audio and transcripts. Two small
processors let the rest of the call work unchanged around it: `SpokenPrompt` turns the
fixed lines the call speaks (greeting, goodbyes) into instructions for the model, and
`ServerVADFrames` reports the server VAD's speech boundaries as VAD frames, which the
latency measurements time turns and barge-ins by.
"""

import asyncio
import contextlib

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    LLMMessagesAppendFrame,
    ProposedUserStartedSpeakingFrame,
    ProposedUserStoppedSpeakingFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.types import NotGiven

from pipelines.config import RealtimeStageConfig

DEFAULT_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_SILENCE_MS = 500
"""OpenAI's server VAD default: silence that ends the caller's turn."""


class CallerFirstRealtimeService(OpenAIRealtimeLLMService):
    """Pipecat's OpenAI Realtime service, for calls where the caller may speak first.

    Pipecat's service sets the conversation up and asks for a response when the first
    context reaches it, expecting a greeting to bring it. Without one, the first context is
    the caller's first turn, which the server VAD has answered already: set up from it, the
    service would replay that turn as text and ask for a second answer. Here that context
    is taken as it stands: earlier messages (a resumed call's) go to the server, the caller's
    turn and its answer stay the server's own."""

    async def _handle_context(self, context: LLMContext, direction: FrameDirection):
        if self._context is not None or direction != FrameDirection.DOWNSTREAM:
            await super()._handle_context(context, direction)
            return
        self._context = context
        await self._process_completed_function_calls(send_new_results=False)
        # The last message is the turn the server heard; the adapter packs the earlier ones.
        earlier = LLMContext(messages=context.get_messages()[:-1])
        params = await self.get_llm_adapter().get_llm_invocation_params(earlier)
        for item in params["messages"]:
            event = events.ConversationItemCreateEvent(item=item)
            self._messages_added_manually[event.item.id] = True
            await self.send_client_event(event)
        self._llm_needs_conversation_setup = False


def openai_realtime(
    stage: RealtimeStageConfig,
    *,
    api_key: str | None,
    system_prompt: str,
    voice: str,
    language: str,
    tools: ToolsSchema | NotGiven,
) -> CallerFirstRealtimeService:
    """OpenAI Realtime over its WebSocket (`url`), with server VAD (`turn_detection`:
    `threshold`, `prefix_padding_ms`, `silence_duration_ms`) and the caller's words
    transcribed by `transcription_model`."""
    options = dict(stage.options)
    transcription = events.InputAudioTranscription(
        model=options.pop("transcription_model", "gpt-4o-transcribe"), language=language
    )
    session = events.SessionProperties(
        output_modalities=["audio"],
        audio=events.AudioConfiguration(
            input=events.AudioInput(
                transcription=transcription,
                turn_detection=events.TurnDetection(**options.pop("turn_detection", {})),
            ),
            output=events.AudioOutput(voice=voice),
        ),
        # The agent's tools from the session's start, so a caller who speaks first can use them.
        tools=None if isinstance(tools, NotGiven) else tools,
    )
    return CallerFirstRealtimeService(
        api_key=api_key or "",
        base_url=options.pop("url", None) or DEFAULT_URL,
        settings=OpenAIRealtimeLLMService.Settings(
            system_instruction=system_prompt,
            session_properties=session,
            **options,
        ),
    )


def silence_secs(stage: RealtimeStageConfig) -> float:
    """How long the server VAD waits in silence before it ends the caller's turn."""
    turn_detection = stage.options.get("turn_detection") or {}
    return turn_detection.get("silence_duration_ms", DEFAULT_SILENCE_MS) / 1000


def user_params(vad_analyzer: VADAnalyzer | None) -> LLMUserAggregatorParams:
    """The user aggregator of a realtime call. The provider's VAD finds the caller's turns
    (OpenAI's service proposes them to the aggregator; Gemini's interrupts the agent itself).
    A local VAD (a `vad` stage), for a service that reports no speech boundaries, only marks
    the caller's speech: its turns interrupt nothing and end at its silence."""
    if vad_analyzer is None:
        return LLMUserAggregatorParams()
    return LLMUserAggregatorParams(
        vad_analyzer=vad_analyzer,
        user_turn_strategies=UserTurnStrategies(
            start=[VADUserTurnStartStrategy(enable_interruptions=False)],
            stop=[SpeechTimeoutUserTurnStopStrategy(wait_for_transcript=False)],
        ),
    )


class SpokenPrompt(FrameProcessor):
    """Has the model say a fixed line: a `TTSSpeakFrame` (there is no TTS to speak it)
    becomes an instruction appended to the conversation, answered at once. An `EndFrame`
    right behind it (a goodbye) waits until the agent has said the line, or `hold_secs`.

    The line is said when the agent stops speaking after it started speaking again: an
    answer still playing when the line is asked for (each response is spoken whole, from
    its own start to its own stop) ends before the line begins."""

    def __init__(self, hold_secs: float = 15.0, **kwargs):
        super().__init__(**kwargs)
        self._hold_secs = hold_secs
        self._line_started = False
        self._line_said = asyncio.Event()
        self._line_said.set()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, EndFrame) and not self._line_said.is_set():
            self.create_task(self._release(frame))
            return
        if isinstance(frame, BotStartedSpeakingFrame):
            self._line_started = True
        if isinstance(frame, BotStoppedSpeakingFrame) and self._line_started:
            self._line_said.set()
        if isinstance(frame, TTSSpeakFrame):
            self._line_said.clear()
            self._line_started = False
            instruction = f'Say exactly this to the caller, and nothing else: "{frame.text}"'
            # Not `system`: a context's leading system message would become the session's
            # instructions (which the agent's prompt overrides) instead of an item to act on.
            frame = LLMMessagesAppendFrame(
                messages=[{"role": "developer", "content": instruction}], run_llm=True
            )
        await self.push_frame(frame, direction)

    async def _release(self, frame: EndFrame) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._line_said.wait(), self._hold_secs)
        await self.push_frame(frame)


class ServerVADFrames(FrameProcessor):
    """Follows the realtime service: reports the server VAD's speech start and stop (which
    the service proposes as turn boundaries) as `VADUserStarted/StoppedSpeakingFrame`s."""

    def __init__(self, stop_secs: float, **kwargs):
        super().__init__(**kwargs)
        self._stop_secs = stop_secs

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, ProposedUserStartedSpeakingFrame):
            await self.push_frame(VADUserStartedSpeakingFrame())
        elif isinstance(frame, ProposedUserStoppedSpeakingFrame):
            await self.push_frame(VADUserStoppedSpeakingFrame(stop_secs=self._stop_secs))
