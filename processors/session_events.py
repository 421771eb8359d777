"""Outbound session events for WebSocket clients (the direct session protocol)."""

from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class SessionEventEmitter(FrameProcessor):
    """Turns pipeline activity into the JSON events a session client receives.

    Sits just before the output transport. It reports the agent starting and
    stopping speech, the caller starting to speak (``input.speech.started``: the
    client must drop the agent audio it has buffered), and the end of the session
    with its reason. Other parts of the call send events through :meth:`send`.
    A non-``interruptible`` agent keeps talking over the caller, so the client is
    not told to drop its buffered agent audio.
    """

    def __init__(self, *, interruptible: bool = True, **kwargs):
        super().__init__(**kwargs)
        self._interruptible = interruptible
        self._ended = False

    async def send(self, event: dict[str, Any]) -> None:
        """Send one event to the client at once, ahead of queued audio."""
        await self.push_frame(OutputTransportMessageUrgentFrame(message=event))

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        if (
            isinstance(frame, UserStartedSpeakingFrame)
            and direction == FrameDirection.DOWNSTREAM
            and self._interruptible
        ):
            await self.send({"type": "input.speech.started"})
        elif isinstance(frame, BotStartedSpeakingFrame) and direction == FrameDirection.UPSTREAM:
            await self.send({"type": "agent.speech.started"})
        elif isinstance(frame, BotStoppedSpeakingFrame) and direction == FrameDirection.UPSTREAM:
            await self.send({"type": "agent.speech.stopped"})
        elif isinstance(frame, (EndFrame, CancelFrame)) and not self._ended:
            self._ended = True
            event = {"type": "session.ended", "reason": end_reason(frame)}
            if isinstance(frame, EndFrame):
                # In order: the event leaves after the audio queued before it.
                await self.push_frame(OutputTransportMessageFrame(message=event))
            else:
                await self.send(event)

        await self.push_frame(frame, direction)


KNOWN_END_REASONS = {
    "completed",
    "caller_hangup",
    "agent_ended",
    "max_turns",
    "max_duration",
    "inactivity",
    "agent_deleted",
    "hung_up",
    "disconnected",
    "transferred",
    "voicemail",
    "server_shutdown",
    "provider_error",
    "error",
}


def end_reason(frame: EndFrame | CancelFrame) -> str:
    """The session end reason a terminal frame carries; Pipecat's own reasons are errors."""
    reason = frame.reason
    if reason is None:
        return "completed"
    return reason if reason in KNOWN_END_REASONS else "error"
