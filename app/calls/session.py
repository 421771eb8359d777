"""Runs one call from connect to teardown, whatever the transport."""

import asyncio
import json
from datetime import datetime, timedelta

from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, TTSSpeakFrame
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from app import recordings, tracing
from app.calls import post_call, tools
from app.calls.flow import CallFlow
from app.calls.latency import ACTIVE_SESSIONS, SESSIONS_ENDED, CallLatencyTracker
from app.cost import UsageObserver
from app.logs import bind_call
from app.state import AppState
from app.storage import calls as call_store
from app.storage import latency as latency_store
from app.storage import sessions as session_store
from app.storage.ids import utcnow
from app.storage.models import Agent, Session
from pipelines import pipecat_compat
from pipelines.builder import AgentSpec, ToolDefinition, build_pipeline
from pipelines.config import PipelineConfig
from pipelines.registry import CallProcessors
from pipelines.voicemail import VoicemailAction
from processors.session_events import end_reason

SHUTDOWN_GOODBYE = "I'm sorry, I have to end the call now. Please call back in a moment. Goodbye."
IDLE_TIMEOUT_SECS = 300.0
RECORDING_SAMPLE_RATE = 16000
_GRACE_TIMERS: set[asyncio.Task] = set()
"""Running resume grace timers (held so they aren't garbage-collected)."""


def agent_spec(agent: Agent) -> AgentSpec:
    return AgentSpec(
        system_prompt=agent.system_prompt,
        voice=agent.voice_id,
        language=agent.language,
        tools=[
            ToolDefinition(**{k: t[k] for k in ("name", "description", "parameters") if k in t})
            for t in agent.tools
        ],
        max_turns=agent.max_turns,
        interruptible=agent.interruptible,
        max_duration_secs=agent.max_duration,
        inactivity_timeout_secs=agent.inactivity_timeout,
        inactivity_action=agent.inactivity_action,
        endpointing=agent.endpointing,
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
        processors: CallProcessors,
        transport: BaseTransport,
        session_protocol: bool,
        audio_out_sample_rate: int,
        audio_in_sample_rate: int | None = None,
        extra_input: list[FrameProcessor] | None = None,
        extra_output: list[FrameProcessor] | None = None,
        resumable: bool = False,
        history: list[dict] | None = None,
    ):
        """``processors``: the config's, built before the transport (which takes their audio
        filter and mixer). ``resumable``: a dropped connection leaves the session open for a
        reconnect (the direct WebSocket). ``history``: the conversation so far, when resuming.
        ``audio_in_sample_rate``: the pipeline's input rate, if not the config's."""
        self.state = state
        self.session_id = session.id
        bind_call(session.id, agent.id, agent.account_id)
        self._started_at = session.started_at
        self.agent_id = agent.id
        self._agent = agent
        self._greeting = session.initial_message or agent.greeting
        self._config = config
        self._processors = processors
        self._transport = transport
        self._session_protocol = session_protocol
        self._audio_out_sample_rate = audio_out_sample_rate
        self._audio_in_sample_rate = audio_in_sample_rate or config.audio_in_sample_rate
        self._extra_input = extra_input
        self._extra_output = extra_output
        self._resumable = resumable
        self._history = history or []
        self._tool_runner = tools.ToolRunner(
            state.settings,
            self,
            agent.tools,
            record=self._record,
            send_event=self._send_event if session_protocol else None,
        )
        self._flow = (
            CallFlow(
                agent.flow, agent.tools, self._tool_runner, self._save_flow, session.flow_state
            )
            if agent.flow or session.flow_state
            else None
        )
        """The agent's conversation flow (a resumed call's: the one it began with); it offers
        the LLM each node's functions."""
        self._voicemail = (
            VoicemailAction(
                message=session.voicemail["message"]
                if session.voicemail["action"] == "leave_message"
                else None
            )
            if session.voicemail
            else None
        )
        """An outbound call's answering-machine detection: the message to leave, if any."""
        self._transferred = False
        """Set once the call lives on elsewhere (a transfer): its end is `transferred`."""
        inline = session.inline_config or {}
        self._llm_options = {
            k: inline[k] for k in ("model", "temperature") if inline.get(k) is not None
        }
        """An inline call's own LLM model and temperature."""
        self._worker: PipelineWorker | None = None
        self._end_requested: str | None = None
        """An end asked for before the pipeline was built."""
        self._final_frame: Frame | None = None
        self._error: str | None = None
        self._record_lock = asyncio.Lock()
        self._usage = UsageObserver()
        self._recording = False
        """Whether this call records (its agent asks for it and the account is under its cap)."""

    def _build(self) -> PipelineWorker:
        self._latency = CallLatencyTracker(self._save_latency)
        self._call = build_pipeline(
            self._config,
            self._spec(),
            self._transport,
            tool_handler=self._tool_runner.run,
            session_protocol=self._session_protocol,
            extra_input=self._extra_input,
            extra_output=self._extra_output,
            processors=self._processors,
        )
        worker = self._worker = PipelineWorker(
            self._call.pipeline,
            params=PipelineParams(
                audio_in_sample_rate=self._audio_in_sample_rate,
                audio_out_sample_rate=self._audio_out_sample_rate,
                enable_metrics=True,
                enable_usage_metrics=True,
            ),
            enable_rtvi=False,
            enable_tracing=tracing.exporting(),
            conversation_id=self.session_id,
            additional_span_attributes={
                "session.id": self.session_id,
                "agent.id": self.agent_id,
                "account.id": self._agent.account_id,
            },
            idle_timeout_secs=IDLE_TIMEOUT_SECS,
            observers=[*self._latency.observers, self._usage],
        )
        self._wire_events(self._transport, worker)
        return worker

    def _spec(self) -> AgentSpec:
        spec = agent_spec(self._agent)
        spec.history = self._history
        if self._flow:
            spec.tools = []  # the flow sets each node's own
        spec.llm_options = self._llm_options
        spec.voicemail = self._voicemail
        if self._started_at and spec.max_duration_secs:
            # A resumed call keeps the time it had left.
            elapsed = (utcnow() - self._started_at).total_seconds()
            spec.max_duration_secs = max(spec.max_duration_secs - elapsed, 1.0)
        if self._recording:
            spec.recording_path = recordings.live_path(self.state.settings, self.session_id)
            spec.recording_sample_rate = RECORDING_SAMPLE_RATE
        return spec

    def _wire_events(self, transport: BaseTransport, worker: PipelineWorker) -> None:
        call = self._call

        @transport.event_handler("on_client_connected")
        async def on_connected(_transport, _client):
            # A resumed call carries on where it was; a user-first agent waits for the caller.
            if self._greeting and not self._history and self._agent.first_speaker != "user":
                await worker.queue_frame(TTSSpeakFrame(self._greeting))
            if self._flow:
                await self._flow.start(
                    worker,
                    call.llm,
                    call.context_aggregator,
                    speak_first=self._agent.first_speaker != "user",
                )

        @transport.event_handler("on_client_disconnected")
        async def on_disconnected(_transport, _client):
            if self._transferred:
                reason = "transferred"
            elif self._resumable and not getattr(self._serializer(), "hung_up", False):
                reason = "disconnected"
            else:
                reason = "caller_hangup"
            await worker.cancel(reason=reason)

        @call.user_aggregator.event_handler("on_user_turn_stopped")
        async def on_user_turn(_aggregator, _strategy, message):
            if message.content:
                await self._record("USER", message.content, message.timestamp)

        if self._config.realtime:
            # A realtime service's caller turn is written once the agent starts answering it.
            @call.user_aggregator.event_handler("on_user_turn_message_added")
            async def on_user_message(_aggregator, message):
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
                if not self._tool_runner.client_result(call_id, result) and call.events:
                    await call.events.send(
                        {
                            "type": "session.error",
                            "code": "unknown_call_id",
                            "message": f"no pending tool call '{call_id}'",
                        }
                    )

        if call.provider_errors:

            @call.provider_errors.event_handler("on_provider_error")
            async def on_provider_error(_monitor, service, error):
                logger.warning(f"session {self.session_id}: provider failure in {service}: {error}")

        @worker.event_handler("on_pipeline_finished")
        async def on_finished(_worker, frame):
            self._final_frame = frame

        @worker.event_handler("on_pipeline_error")
        async def on_error(_worker, frame):
            logger.error(f"session {self.session_id}: pipeline error: {frame.error}")
            self._error = str(frame.error)

        @worker.event_handler("on_idle_timeout")
        async def on_idle(_worker):
            logger.info(f"session {self.session_id}: idle for {IDLE_TIMEOUT_SECS}s, ending")

    async def _save_latency(self, record: dict) -> None:
        async with self.state.db.sessions() as db:
            await latency_store.save(db, self.session_id, record)

    async def _record(
        self, speaker: str, content: str, timestamp: str, interrupted: bool = False
    ) -> None:
        """Store a finished turn at once, and tell a session client about it. Entries are
        written one at a time, in the order they were recorded (a caller's turn before the
        tool call it led to, however fast the tool). What is stored, and sent in webhooks,
        passes the config's redactors; the client hears and sees the call as it was."""
        stored = self._processors.redact(content)
        async with self._record_lock, self.state.db.sessions() as db:
            if speaker in ("USER", "AGENT"):
                post_call.turn_recorded(
                    self.state.jobs, db, self._agent, self.session_id, speaker, stored, interrupted
                )
            await session_store.add_transcript_entry(  # commits the turn with its webhook
                db,
                self.session_id,
                speaker=speaker,
                content=stored,
                timestamp=_parse_time(timestamp),
                interrupted=interrupted,
            )
        if self._call.events and speaker in ("USER", "AGENT"):
            event: dict[str, str | bool] = {
                "type": "transcript.user" if speaker == "USER" else "transcript.agent",
                "text": content,
            }
            if speaker == "AGENT":
                event["interrupted"] = interrupted
            await self._call.events.send(event)

    async def _save_flow(self, state: dict, node: str | None) -> None:
        """Store the flow's state; a node just entered is marked in the transcript too."""
        async with self._record_lock, self.state.db.sessions() as db:
            await session_store.save_flow_state(db, self.session_id, state)
            await db.commit()
        if node is not None:
            await self._record("SYSTEM", json.dumps({"node": node}), utcnow().isoformat())

    async def _send_event(self, event: dict) -> None:
        if self._call.events:
            await self._call.events.send(event)

    async def transfer(self, number: str) -> str | None:
        """Move the call to `number` (the transfer_call tool); an error for the LLM, or None."""
        return "transfer_call only works on Twilio calls"

    async def warm_transfer(self, number: str, answer_timeout_secs: int) -> str | None:
        """Connect the caller to `number` after a summary (transfer_call, warm); an error or None."""
        return "transfer_call only works on Twilio calls"

    def _serializer(self):
        """The transport's frame serializer, for WebSocket transports; else None."""
        return pipecat_compat.transport_serializer(self._transport)

    async def end(self, reason: str) -> None:
        """End the call (for example, its agent was deleted) with an `EndFrame`, which ends it
        cleanly in any stage: a cancel that lands while the pipeline is still starting is
        dropped with its reason. A call whose pipeline isn't built yet ends once it is."""
        if self._worker:
            await self._worker.queue_frame(EndFrame(reason=reason))
        else:
            self._end_requested = self._end_requested or reason

    async def end_with_goodbye(self, reason: str, goodbye: str = SHUTDOWN_GOODBYE) -> None:
        """End the call once a short goodbye has played. A machine heard by Twilio's detection
        (`voicemail`) goes to the call's voicemail detector, which leaves its message once;
        only if the detector had heard a person does the call say `goodbye` here."""
        if reason == "voicemail" and self._worker and self._call.voicemail:
            if await pipecat_compat.machine_heard_elsewhere(self._call.voicemail):
                return
        if self._worker:
            await self._worker.queue_frames([TTSSpeakFrame(goodbye), EndFrame(reason=reason)])

    async def run(self) -> None:
        """Run the call to its end and record how it ended. The session must be claimed."""
        self.state.calls.add(self)
        await post_call.session_started(
            self.state.db, self.state.jobs, self._agent, self.session_id
        )
        ACTIVE_SESSIONS.inc()
        try:
            self._recording = self._agent.recording_enabled and await recordings.start_recording(
                self.state.settings, self.state.db, self.session_id, self._agent.account_id
            )
            worker = self._build()
            if self._end_requested:
                await worker.queue_frame(EndFrame(reason=self._end_requested))
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        except Exception as exc:
            logger.exception(f"session {self.session_id}: call failed")
            self._error = self._error or str(exc)
        finally:
            ACTIVE_SESSIONS.dec()
            self.state.calls.remove(self)
            self._tool_runner.cancel_pending()
            try:
                await self._finish()
            except Exception:
                logger.exception(f"session {self.session_id}: recording the end of the call failed")

    async def _await_reconnect(self) -> None:
        """Keep the session open for the grace period; unless the client is back by
        then, it ends `failed` / `disconnected`."""
        grace = self.state.settings.resume_grace_secs
        if self._recording:
            try:
                await recordings.store_so_far(self.state.settings, self.session_id)
            except Exception:
                logger.exception(f"session {self.session_id}: could not store its recording so far")
        async with self.state.db.sessions() as db:
            await call_store.suspend(db, self.session_id, utcnow() + timedelta(seconds=grace))
        logger.info(
            f"session {self.session_id}: client dropped; waiting {grace:g}s for it to reconnect"
        )
        task = asyncio.create_task(
            self._fail_unless_resumed(grace), name=f"resume-grace-{self.session_id}"
        )
        _GRACE_TIMERS.add(task)
        task.add_done_callback(_GRACE_TIMERS.discard)

    async def _fail_unless_resumed(self, grace: float) -> None:
        await asyncio.sleep(grace)
        async with self.state.db.sessions() as db:
            failed = await call_store.fail_unresumed(db, self.session_id)
        if not failed:  # the client came back
            if self.state.calls.get(self.session_id) is None:  # on another node, with the recording
                recordings.live_path(self.state.settings, self.session_id).unlink(missing_ok=True)
            return
        logger.info(
            f"session {self.session_id}: not resumed within {grace:g}s, ended failed (disconnected)"
        )
        SESSIONS_ENDED.labels(end_reason="disconnected").inc()
        await self._post_call_finished()

    async def _post_call_finished(self) -> None:
        await post_call.session_finished(
            self.state.settings,
            self.state.db,
            self.state.jobs,
            self._agent,
            self._config,
            self.session_id,
            self._usage,
        )

    async def _finish(self) -> None:
        frame = self._final_frame
        reason = end_reason(frame) if isinstance(frame, (EndFrame, CancelFrame)) else "error"
        if reason == "error" and (error := getattr(frame, "reason", None)):
            self._error = self._error or str(error)
        if reason == "disconnected" and self._resumable:
            await self._await_reconnect()
            return
        status = "failed" if reason in ("error", "disconnected") else "completed"
        logger.info(f"session {self.session_id}: ended {status} ({reason})")
        SESSIONS_ENDED.labels(end_reason=reason).inc()
        async with self.state.db.sessions() as db:
            await session_store.finish(
                db, self.session_id, status=status, end_reason=reason, error=self._error
            )
        await self._post_call_finished()


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return utcnow()
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=utcnow().tzinfo)
