"""A short filler ("One moment…") when the agent is slow to answer."""

import asyncio

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class ThinkingFiller(FrameProcessor):
    """After the LLM: once the LLM has started on a reply, if no words of it come within
    `after_secs` (a slow model, or a tool that runs long), say `text` — once, however many
    LLM runs and tools the reply then takes. The reply's first words, an interruption or the
    end of the call call it off."""

    def __init__(self, after_secs: float, text: str):
        super().__init__()
        self._after_secs = after_secs
        self._text = text
        self._waiting = False
        """Set from the reply's start until its first words: a tool's second LLM run doesn't re-arm."""
        self._timer: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseStartFrame) and not self._waiting:
            self._waiting = True
            self._timer = self.create_task(self._say_filler(), name="thinking-filler")
        elif isinstance(frame, (LLMTextFrame, InterruptionFrame, EndFrame, CancelFrame)):
            await self._call_off()
        await self.push_frame(frame, direction)

    async def _say_filler(self) -> None:
        await asyncio.sleep(self._after_secs)
        self._timer = None
        await self.push_frame(TTSSpeakFrame(self._text))

    async def _call_off(self) -> None:
        self._waiting = False
        if self._timer:
            await self.cancel_task(self._timer)
            self._timer = None
