"""Keeps the words of a reply the caller cut off out of the next reply's transcript."""

from pipecat.frames.frames import Frame, InterruptionFrame, TTSTextFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class LateWordFilter(FrameProcessor):
    """Drops a spoken word that leaves the output transport after the interruption that cut
    its reply off.

    The output transport may be handing on a word as the caller cuts in; arriving after the
    interruption, it would join the next reply in the assistant aggregator (a stored
    "open Okay."). Sits between the output transport and the assistant aggregator.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._playing: str | None = None
        self._cut_off: str | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._cut_off = self._playing
        elif isinstance(frame, TTSTextFrame) and direction == FrameDirection.DOWNSTREAM:
            if frame.context_id is not None and frame.context_id == self._cut_off:
                return
            self._playing = frame.context_id
        await self.push_frame(frame, direction)
