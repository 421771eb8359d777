"""A call over a carrier's media stream: the common call, plus keypad input and Twilio marks."""

from loguru import logger
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.transports.base_transport import BaseTransport

from app.calls.session import CallSession
from app.storage import telephony as telephony_store
from app.storage.ids import utcnow
from app.storage.models import PhoneCall
from app.telephony import transfer
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
            await worker.cancel(reason="transferred" if self._transferred else "caller_hangup")

    async def _record(
        self, speaker: str, content: str, timestamp: str, interrupted: bool = False
    ) -> None:
        if speaker == "AGENT" and self._marks is not None:
            heard_at = await self._marks.wait_heard(MARK_ECHO_TIMEOUT_SECS)
            if heard_at is not None:
                timestamp = heard_at.isoformat()
        await super()._record(speaker, content, timestamp, interrupted)

    async def _twilio_call(self) -> tuple[TwilioStreamSerializer, PhoneCall | None, str] | str:
        """This call's Twilio serializer, phone call row and call SID; or why it can't be moved."""
        serializer = self._serializer()
        if not isinstance(serializer, TwilioStreamSerializer):
            return "transfer_call only works on Twilio calls"
        async with self.state.db.sessions() as db:
            phone_call = await telephony_store.call_for_session(db, self.session_id)
        call_sid = (phone_call.call_sid if phone_call else None) or serializer.call_sid
        if not call_sid:
            return "this call has no Twilio call SID"
        return serializer, phone_call, call_sid

    async def transfer(self, number: str) -> str | None:
        """Move this Twilio call to `number`; an error for the LLM, or None."""
        found = await self._twilio_call()
        if isinstance(found, str):
            return found
        serializer, _phone_call, call_sid = found
        self._transferred = True  # Twilio may stop the stream before the update returns
        error = await transfer.transfer_twilio_call(self.state.settings, call_sid, number)
        if error is None:
            serializer.skip_hang_up()  # the call lives on at `number`: never hang it up
            logger.info(f"session {self.session_id}: transferred call {call_sid} to {number}")
        self._transferred = error is None
        return error

    async def warm_transfer(self, number: str, answer_timeout_secs: int) -> str | None:
        """Tell the caller to hold, ring `number` with a summary of the call, then move this
        Twilio call into a conference with them (:mod:`app.telephony.transfer`); an error for
        the LLM when nobody answers, and the call carries on."""
        found = await self._twilio_call()
        if isinstance(found, str):
            return found
        serializer, phone_call, call_sid = found
        caller_id = await self._caller_id(phone_call)
        if caller_id is None:
            return "no number to call the person from: give the agent a phone number"
        error = await transfer.warm_transfer(
            self.state.settings,
            self.state.db,
            account_id=self._agent.account_id,
            session_id=self.session_id,
            call_sid=call_sid,
            caller_id=caller_id,
            number=number,
            answer_timeout_secs=answer_timeout_secs,
            config=self._config,
            conversation=self._conversation(),
            voice=self._agent.voice_id,
            language=self._agent.language,
            hold=self._say,
            moving=self._moving,
        )
        self._transferred = error is None
        if error is None:
            serializer.skip_hang_up()
        return error

    async def _caller_id(self, phone_call: PhoneCall | None) -> str | None:
        """The number a warm transfer rings the person from: the call's own number (the one
        called, or an outbound call's caller ID) if this account holds it, else the agent's
        first number, else the server's TWILIO_FROM_NUMBER."""
        settings = self.state.settings
        if phone_call is not None:
            own = (
                phone_call.to_number
                if phone_call.direction == "inbound"
                else phone_call.from_number
            )
            async with self.state.db.sessions() as db:
                if own == settings.twilio_from_number or await telephony_store.account_holds_number(
                    db, self._agent.account_id, own
                ):
                    return own
        return next(iter(self._agent.phone_numbers), None) or settings.twilio_from_number

    def _conversation(self) -> str:
        """The call so far as its LLM has it (the caller's latest turn may not be stored yet),
        through the config's redactors like the stored transcript: "Caller: …" / "Agent: …" lines."""
        lines = []
        for message in self._call.user_aggregator.context.get_messages():
            role = message.get("role") if isinstance(message, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):  # content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if role in ("user", "assistant") and isinstance(content, str) and content.strip():
                speaker = "Caller" if role == "user" else "Agent"
                lines.append(f"{speaker}: {self._processors.redact(content)}")
        return "\n".join(lines)

    async def _say(self, text: str) -> None:
        if self._worker:
            await self._worker.queue_frame(TTSSpeakFrame(text))

    def _moving(self) -> None:
        """The caller is about to leave: Twilio stops the stream, and that is not a hang-up."""
        self._transferred = True
