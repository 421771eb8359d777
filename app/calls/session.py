"""Runs one call from connect to teardown, whatever the transport."""

import asyncio
from datetime import datetime

from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, TTSSpeakFrame
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from app.calls.latency import ACTIVE_SESSIONS, SESSIONS_ENDED, CallLatencyTracker
from app.calls import post_call
from app.cost import UsageObserver
from app.state import AppState
from app.storage import latency as latency_store
from app.storage import sessions as session_store
from app.storage.ids import utcnow
from app.storage.models import Agent, Session
from pipelines.builder import AgentSpec, CallPipeline, ToolDefinition, build_pipeline
from pipelines.config import PipelineConfig
from processors.session_events import end_reason

TOOL_TIMEOUT_SECS = 10.0
SHUTDOWN_GOODBYE = "I'm sorry, I have to end the call now. Please call back in a moment. Goodbye."
IDLE_TIMEOUT_SECS = 300.0


def agent_spec(agent: Agent) -> AgentSpec:
    return AgentSpec(
        system_prompt=agent.system_prompt,
        voice=agent.voice_id,
        language=agent.language,
        tools=[ToolDefinition(**{k: t[k] for k in ("name", "description", "parameters") if k in t}) for t in agent.tools],
        max_turns=agent.max_turns,
    )


class CallSession:
    """One live call: builds its pipeline, writes its transcript as turns end, keeps its
    lifecycle in the database, and tears everything down in one place."""

    def __init__(
        self,
        state: AppState,
        *,
        session: Session,
        agent: Agent,
        config: PipelineConfig,
        transport: BaseTransport,
        session_protocol: bool,
        audio_out_sample_rate: int,
        extra_input: list[FrameProcessor] | None = None,
        extra_output: list[FrameProcessor] | None = None,
    ):
        self.state = state
        self.session_id = session.id
        self.agent_id = agent.id
        self._agent = agent
        self._greeting = session.initial_message or agent.greeting
        self._config = config
        self._transport = transport
        self._session_protocol = session_protocol
        self._audio_out_sample_rate = audio_out_sample_rate
        self._extra_input = extra_input
        self._extra_output = extra_output
        self._worker: PipelineWorker | None = None
        self._final_frame: Frame | None = None
        self._error: str | None = None
        self._pending_tools: dict[str, asyncio.Future] = {}
        self._usage = UsageObserver()

    def _build(self) -> None:
        self._latency = CallLatencyTracker(self._save_latency)
        self._call = build_pipeline(
            self._config,
            agent_spec(self._agent),
            self._transport,
            tool_handler=self._run_client_tool if self._session_protocol else self._no_tool_runner,
            session_protocol=self._session_protocol,
            extra_input=self._extra_input,
            extra_output=self._extra_output,
        )
        self._worker = PipelineWorker(
            self._call.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=self._config.audio_in_sample_rate,
                audio_out_sample_rate=self._audio_out_sample_rate,
                enable_metrics=True,
                enable_usage_metrics=True,
            ),
            enable_rtvi=False,
            idle_timeout_secs=IDLE_TIMEOUT_SECS,
            observers=[*self._latency.observers, self._usage],
        )
        self._wire_events(self._transport)

    def _wire_events(self, transport: BaseTransport) -> None:
        call = self._call

        @transport.event_handler("on_client_connected")
        async def on_connected(_transport, _client):
            if self._greeting:
                await self._worker.queue_frame(TTSSpeakFrame(self._greeting))

        @transport.event_handler("on_client_disconnected")
        async def on_disconnected(_transport, _client):
            await self._worker.cancel(reason="caller_hangup")

        @call.user_aggregator.event_handler("on_user_turn_stopped")
        async def on_user_turn(_aggregator, _strategy, message):
            if message.content:
                await self._record("USER", message.content, message.timestamp)

        @call.assistant_aggregator.event_handler("on_assistant_turn_stopped")
        async def on_agent_turn(_aggregator, message):
            if message.content:
                await self._record("AGENT", message.content, message.timestamp, message.interrupted)

        if call.client_events:

            @call.client_events.event_handler("on_user_text")
            async def on_user_text(_processor, text):
                await self._record("USER", text, utcnow().isoformat())

            @call.client_events.event_handler("on_tool_result")
            async def on_tool_result(_processor, call_id, result):
                future = self._pending_tools.get(call_id)
                if future and not future.done():
                    future.set_result(result)
                elif call.events:
                    await call.events.send(
                        {"type": "session.error", "code": "unknown_call_id", "message": f"no pending tool call '{call_id}'"}
                    )

        if call.provider_errors:

            @call.provider_errors.event_handler("on_provider_error")
            async def on_provider_error(_monitor, service, error):
                logger.warning(f"session {self.session_id}: provider failure in {service}: {error}")

        if call.provider_errors:

            @call.provider_errors.event_handler("on_provider_error")
            async def on_provider_error(_monitor, service, error):
                logger.warning(f"session {self.session_id}: provider failure in {service}: {error}")

        @self._worker.event_handler("on_pipeline_finished")
        async def on_finished(_worker, frame):
            self._final_frame = frame

        @self._worker.event_handler("on_pipeline_error")
        async def on_error(_worker, frame):
            logger.error(f"session {self.session_id}: pipeline error: {frame.error}")
            self._error = str(frame.error)

        @self._worker.event_handler("on_idle_timeout")
        async def on_idle(_worker):
            logger.info(f"session {self.session_id}: idle for {IDLE_TIMEOUT_SECS}s, ending")

    async def _save_latency(self, record: dict) -> None:
        async with self.state.db.sessions() as db:
            await latency_store.save(db, self.session_id, record)

    async def _record(self, speaker: str, content: str, timestamp: str, interrupted: bool = False) -> None:
        """Store a finished turn at once, and tell a session client about it."""
        async with self.state.db.sessions() as db:
            await session_store.add_transcript_entry(
                db, self.session_id, speaker=speaker, content=content,
                timestamp=_parse_time(timestamp), interrupted=interrupted,
            )
        if speaker != "TOOL":
            post_call.turn_recorded(self.state, self._agent, self.session_id, speaker, content, interrupted)
        if self._call.events:
            event = {"type": "transcript.user" if speaker == "USER" else "transcript.agent", "text": content}
            if speaker == "AGENT":
                event["interrupted"] = interrupted
            await self._call.events.send(event)

    async def _run_client_tool(self, params: FunctionCallParams) -> None:
        """A tool the WebSocket client runs: send `tool.call`, wait for its `tool.result`."""
        call_id = params.tool_call_id
        future = asyncio.get_running_loop().create_future()
        self._pending_tools[call_id] = future
        await self._call.events.send(
            {"type": "tool.call", "call_id": call_id, "name": params.function_name, "arguments": dict(params.arguments)}
        )
        try:
            result = await asyncio.wait_for(future, TOOL_TIMEOUT_SECS)
        except TimeoutError:
            result = {"error": f"the client did not answer tool '{params.function_name}' within {TOOL_TIMEOUT_SECS:.0f}s"}
        finally:
            self._pending_tools.pop(call_id, None)
        await params.result_callback(result)

    async def _no_tool_runner(self, params: FunctionCallParams) -> None:
        await params.result_callback({"error": f"tool '{params.function_name}' cannot run on this connection"})

    async def end(self, reason: str) -> None:
        """End the call now (for example, its agent was deleted)."""
        if self._worker:
            await self._worker.cancel(reason=reason)

    async def end_with_goodbye(self, reason: str, goodbye: str = SHUTDOWN_GOODBYE) -> None:
        """End the call once a short goodbye has played."""
        if self._worker:
            await self._worker.queue_frames([TTSSpeakFrame(goodbye), EndFrame(reason=reason)])

    async def run(self) -> None:
        """Run the call to its end and record how it ended. The session must be claimed."""
        self.state.calls.add(self)
        post_call.session_started(self.state, self._agent, self.session_id)
        ACTIVE_SESSIONS.inc()
        try:
            self._build()
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(self._worker)
            await runner.run()
        except Exception as exc:
            logger.exception(f"session {self.session_id}: call failed")
            self._error = self._error or str(exc)
        finally:
            ACTIVE_SESSIONS.dec()
            self.state.calls.remove(self)
            for future in self._pending_tools.values():
                future.cancel()
            await self._finish()

    async def _finish(self) -> None:
        frame = self._final_frame
        reason = end_reason(frame) if isinstance(frame, (EndFrame, CancelFrame)) else "error"
        if reason == "error" and frame is not None and frame.reason:
            self._error = self._error or str(frame.reason)
        status = "failed" if reason == "error" else "completed"
        logger.info(f"session {self.session_id}: ended {status} ({reason})")
        SESSIONS_ENDED.labels(end_reason=reason).inc()
        async with self.state.db.sessions() as db:
            await session_store.finish(db, self.session_id, status=status, end_reason=reason, error=self._error)
        await post_call.session_finished(self.state, self._agent, self._config, self.session_id, self._usage)


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return utcnow()
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=utcnow().tzinfo)
