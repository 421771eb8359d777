"""A call over a carrier's media stream: the common call, plus keypad input and Twilio marks."""

from loguru import logger
from pipecat.pipeline.worker import PipelineWorker
from pipecat.transports.base_transport import BaseTransport

from app.calls import tools
from app.calls.session import CallSession
from app.storage import telephony as telephony_store
from app.storage.ids import utcnow
from processors.keypad import KeypadToText
from processors.twilio_marks import TwilioMarks, TwilioStreamSerializer

MARK_ECHO_TIMEOUT_SECS = 10.0


class PhoneCallSession(CallSession):
    """:class:`CallSession` for telephony transports.

    Keypad presses reach the LLM as text and the transcript. With ``marks`` (Twilio),
    an agent turn enters the transcript once the caller has heard it, stamped with
    the time Twilio echoed the turn's mark; a ``stop`` message ends the call. A Twilio
    call can be transferred (the transfer_call tool).
    """

    def __init__(self, state, *, marks: TwilioMarks | None = None, **kwargs):
        self._keypad = KeypadToText()
        self._marks = marks
        super().__init__(
            state,
            session_protocol=False,
            extra_input=[self._keypad],
            extra_output=[marks] if marks else None,
            **kwargs,
        )

    def _wire_events(self, transport: BaseTransport, worker: PipelineWorker) -> None:
        super()._wire_events(transport, worker)

        @self._keypad.event_handler("on_keypad")
        async def on_keypad(_processor, text):
            await self._record("USER", text, utcnow().isoformat())

        if self._marks is None:
            return

        @self._marks.event_handler("on_agent_heard")
        async def on_agent_heard(_processor, name, heard_at):
            how = f"{name} played" if name else "cut off by the caller"
            logger.debug(
                f"session {self.session_id}: agent finished speaking ({how} at {heard_at:%H:%M:%S.%f})"
            )

        @self._marks.event_handler("on_stream_stopped")
        async def on_stream_stopped(_processor):
            logger.info(f"session {self.session_id}: the carrier stopped the stream")
            await worker.cancel(reason="caller_hangup")

    async def _record(
        self, speaker: str, content: str, timestamp: str, interrupted: bool = False
    ) -> None:
        if speaker == "AGENT" and self._marks is not None:
            heard_at = await self._marks.wait_heard(MARK_ECHO_TIMEOUT_SECS)
            if heard_at is not None:
                timestamp = heard_at.isoformat()
        await super()._record(speaker, content, timestamp, interrupted)

    async def transfer(self, number: str) -> str | None:
        """Move this Twilio call to `number`; an error for the LLM, or None."""
        serializer = self._serializer()
        if not isinstance(serializer, TwilioStreamSerializer):
            return "transfer_call only works on Twilio calls"
        async with self.state.db.sessions() as db:
            phone_call = await telephony_store.call_for_session(db, self.session_id)
        call_sid = (phone_call.call_sid if phone_call else None) or serializer.call_sid
        if not call_sid:
            return "this call has no Twilio call SID"
        error = await tools.transfer_twilio_call(self.state.settings, call_sid, number)
        if error is None:
            self._transferred = True
            serializer.skip_hang_up()  # the call lives on at `number`: never hang it up
            logger.info(f"session {self.session_id}: transferred call {call_sid} to {number}")
        return error
