"""Gemini Live on the speech-to-speech path (`pipelines/realtime.py`): Pipecat's
`GeminiLiveLLMService` over Google's BidiGenerateContent WebSocket.

Gemini's server VAD finds the caller's turns and interrupts the agent (`interrupted`), but
Gemini reports no speech boundaries, so a config gives it a `vad` stage: a local VAD that
marks the caller's speech for the latency measurements and interrupts nothing
(`realtime.user_params`). Imported only by a call that uses it (google-genai is slow to import).
"""

from google.genai.types import (
    Content,
    ContentDict,
    HttpOptions,
    LiveConnectConfig,
    LiveServerMessage,
)
from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import CancelWorkerFrame, LLMMessagesAppendFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService, GeminiVADParams
from pipecat.transcriptions.language import Language
from pipecat.utils.types import NotGiven

from pipelines.config import RealtimeStageConfig


class CallerFirstGeminiLiveService(GeminiLiveLLMService):
    """Pipecat's Gemini Live service, for calls where the caller may speak first.

    Pipecat's service takes no caller audio until a first context reaches it, and on that
    context reconnects when it brings tools and asks for a response to it. Here the service
    hears the caller from the start, has the agent's tools from its first connection, and
    takes the first context as what it is: a line the call asks the model to say (sent back
    up by the assistant aggregator), answered as Pipecat does; or the caller's first turn,
    which the server has heard and answered already, so only earlier messages (a resumed
    call's) are sent, as history.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._call_context_seen = False

    async def _connection_task_handler(self, config: LiveConnectConfig):
        try:
            await super()._connection_task_handler(config)
        except Exception as exc:
            # Pipecat's task would stop here (a refused key, an unreachable endpoint), leaving
            # the caller in silence: the call ends at once instead (nothing can be said on it).
            logger.error(f"{self}: Gemini Live connection failed: {exc}")
            await self.push_frame(
                CancelWorkerFrame(reason="provider_error"), FrameDirection.UPSTREAM
            )

    async def _handle_session_ready(self, session):
        await super()._handle_session_ready(session)
        self._ready_for_realtime_input = True

    async def _handle_messages_append(self, frame: LLMMessagesAppendFrame):
        if not self._call_context_seen:
            return  # the context the aggregator sends back brings them (`_handle_context`)
        await super()._handle_messages_append(frame)

    async def _handle_msg_tool_call(self, message: LiveServerMessage):
        # The caller's first turn may ask for a tool before the call's context has come (the
        # aggregator sends it once the answer starts): the tool runs without one meanwhile.
        if self._context is None:
            self._context = LLMContext()
        await super()._handle_msg_tool_call(message)

    async def _handle_context(
        self, context: LLMContext, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ):
        if self._call_context_seen:
            await super()._handle_context(context, direction)
            return
        self._call_context_seen = True
        self._context = context
        await self._process_completed_function_calls(send_new_results=False)
        if direction == FrameDirection.UPSTREAM:
            await self._create_initial_response()
            return
        earlier = LLMContext(messages=context.get_messages()[:-1])
        params = await self.get_llm_adapter().get_llm_invocation_params(earlier)
        turns: list[Content | ContentDict] = list(params["messages"])
        if turns and self._session:
            await self._session.send_client_content(turns=turns, turn_complete=False)


def gemini_live(
    stage: RealtimeStageConfig,
    *,
    api_key: str | None,
    system_prompt: str,
    voice: str,
    language: str,
    tools: ToolsSchema | NotGiven,
) -> CallerFirstGeminiLiveService:
    """Gemini Live with its server VAD (`vad`: `start_sensitivity`, `end_sensitivity`,
    `prefix_padding_ms`, `silence_duration_ms`). `base_url` names another endpoint (a proxy,
    a regional one): the client speaks TLS to it, trusting `SSL_CERT_FILE` when set."""
    options = dict(stage.options)
    base_url = options.pop("base_url", None)
    vad = options.pop("vad", None)
    return CallerFirstGeminiLiveService(
        api_key=api_key or "",
        tools=None if isinstance(tools, NotGiven) else tools,
        http_options=HttpOptions(base_url=base_url) if base_url else None,
        settings=GeminiLiveLLMService.Settings(
            system_instruction=system_prompt,
            voice=voice,
            language=Language(language),
            vad=GeminiVADParams(**vad) if vad else None,
            **options,
        ),
    )
