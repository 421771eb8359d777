"""Ends a conversation after a set number of user turns."""

from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    LLMContextFrame,
    LLMContextUserTurnFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class MaxTurnsLimiter(FrameProcessor):
    """Lets the agent answer ``max_turns`` user turns; the next one gets a goodbye.

    Sits between the user aggregator and the LLM. Each finished user turn passes as
    an ``LLMContextUserTurnFrame`` followed by the ``LLMContextFrame`` that runs the
    LLM. Past the limit the LLM run is swallowed, the goodbye is spoken and the
    worker is asked to end with reason ``max_turns`` once it has played.
    """

    def __init__(self, max_turns: int, goodbye: str, **kwargs):
        super().__init__(**kwargs)
        self._max_turns = max_turns
        self._goodbye = goodbye
        self._user_turns = 0
        self._ending = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        if isinstance(frame, LLMContextUserTurnFrame) and direction == FrameDirection.DOWNSTREAM:
            self._user_turns += 1
        elif (
            isinstance(frame, LLMContextFrame)
            and direction == FrameDirection.DOWNSTREAM
            and self._user_turns > self._max_turns
        ):
            if not self._ending:
                self._ending = True
                await self.push_frame(TTSSpeakFrame(self._goodbye))
                await self.push_frame(EndWorkerFrame(reason="max_turns"))
            return

        await self.push_frame(frame, direction)
