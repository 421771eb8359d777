"""Twilio `mark`s: know when the caller has actually heard the agent.

Twilio plays the audio we send from a buffer, so "the audio left the server" is not
"the caller heard it". After each agent utterance :class:`TwilioMarks` sends a
``mark`` message right behind the utterance's last audio; Twilio echoes the mark
once everything before it has played (or at once when a ``clear`` drops it).
:class:`TwilioStreamSerializer` turns those echoes, and Twilio's ``stop``, into
``InputTransportMessageFrame``s, which Pipecat's own serializer would ignore.
"""

import asyncio
import json
from datetime import UTC, datetime

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer


class TwilioStreamSerializer(TwilioFrameSerializer):
    """Pipecat's Twilio serializer, plus inbound ``mark`` and ``stop`` events as messages,
    and a way to skip its hang-up.

    After ``stop`` the call is already over on Twilio's side, so the auto hang-up
    (a REST request) is skipped; so it is after a transfer (:meth:`skip_hang_up`).
    """

    def __init__(self, stream_sid: str, call_sid: str | None = None, *args, **kwargs):
        super().__init__(stream_sid, call_sid, *args, **kwargs)
        self.call_sid = call_sid
        self.hang_up_skipped = False

    def skip_hang_up(self) -> None:
        """Never hang the call up: it is over, or lives on elsewhere."""
        self.hang_up_skipped = True

    async def serialize(self, frame: Frame) -> str | bytes | None:
        # Pipecat hangs up when it serializes the EndFrame or CancelFrame; without a
        # hang-up it sends nothing for them.
        if self.hang_up_skipped and isinstance(frame, (EndFrame, CancelFrame)):
            return None
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            return await super().deserialize(data)
        event = message.get("event") if isinstance(message, dict) else None
        if event == "stop":
            self.skip_hang_up()
        if event in ("mark", "stop"):
            return InputTransportMessageFrame(message=message)
        return await super().deserialize(data)


class TwilioMarks(FrameProcessor):
    """Sends a ``mark`` after each agent utterance and reads Twilio's echoes.

    Sits right before the output transport. Events:

    - ``on_agent_heard(processor, name, heard_at)``: the caller has heard an utterance
      to its end (``name`` is its mark), or was cut off by barge-in (``name`` is None):
      the agent finished speaking.
    - ``on_stream_stopped(processor)``: Twilio sent ``stop``; the call is over.
    """

    def __init__(self, stream_sid: str, **kwargs):
        super().__init__(**kwargs)
        self._stream_sid = stream_sid
        self._sent = 0
        self._pending: set[str] = set()
        self._last_heard_at: datetime | None = None
        self._all_heard = asyncio.Event()
        self._all_heard.set()
        self._register_event_handler("on_agent_heard")
        self._register_event_handler("on_stream_stopped")

    async def wait_heard(self, timeout: float) -> datetime | None:
        """Wait until every mark sent so far has come back: the time of the last echo,
        or None if one never came back (the call ended first, or Twilio is slow)."""
        try:
            await asyncio.wait_for(self._all_heard.wait(), timeout)
        except TimeoutError:
            logger.warning(
                f"{self}: Twilio did not echo marks {sorted(self._pending)} within {timeout}s"
            )
        return None if self._pending else self._last_heard_at

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

        if isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            self._sent += 1
            name = f"utterance-{self._sent}"
            self._pending.add(name)
            self._all_heard.clear()
            mark = {"event": "mark", "streamSid": self._stream_sid, "mark": {"name": name}}
            # Queued behind the utterance's audio, so it reaches Twilio right after it.
            await self.push_frame(OutputTransportMessageFrame(message=mark))
        elif (
            isinstance(frame, InputTransportMessageFrame) and direction == FrameDirection.DOWNSTREAM
        ):
            await self._on_message(frame.message)
        elif isinstance(frame, InterruptionFrame) and self._pending:
            # The output transport drops queued marks along with the audio, and Twilio's
            # `clear` cuts off what it was playing: the caller has heard all they will.
            self._pending.clear()
            await self._heard(datetime.now(UTC))
        elif isinstance(frame, (EndFrame, CancelFrame)):
            self._all_heard.set()  # no more echoes will come; release waiters

    async def _on_message(self, message: dict) -> None:
        event = message.get("event")
        if event == "stop":
            await self._call_event_handler("on_stream_stopped")
        elif event == "mark":
            name = str((message.get("mark") or {}).get("name", ""))
            if name in self._pending:
                self._pending.discard(name)
                await self._heard(datetime.now(UTC), name)

    async def _heard(self, at: datetime, name: str | None = None) -> None:
        self._last_heard_at = at
        if not self._pending:
            self._all_heard.set()
        await self._call_event_handler("on_agent_heard", name, at)
