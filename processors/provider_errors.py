"""Keeps the caller out of silence when a provider fails."""

from pipecat.frames.frames import EndWorkerFrame, ErrorFrame, Frame, StartFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService

APOLOGY = "Sorry, I'm having trouble right now. Could you say that again?"
GIVE_UP = "I'm sorry, I'm having technical difficulties. Please call back later. Goodbye."


class ProviderErrorMonitor(FrameProcessor):
    """Answers an LLM failure (error or timeout) with a short apology; after
    ``max_failures`` failures in one call, says goodbye and ends it with reason
    ``provider_error``. An STT or TTS service that gives up for good (its key is
    rejected, or it can't reconnect) ends the call the same way.

    Sits just before the LLM, so the LLM's and later services' ``ErrorFrame``s pass
    it on their way upstream; the builder reports LLM timeouts through
    :meth:`llm_failed`. Every failure fires ``on_provider_error(processor_name, error)``
    so the call can log it against its session.
    """

    def __init__(self, max_failures: int = 3, **kwargs):
        super().__init__(**kwargs)
        self._max_failures = max_failures
        self._llm_failures = 0
        self._started = False
        self._give_up_on_start = False
        self._gave_up = False
        self._register_event_handler("on_provider_error")

    async def llm_failed(self, service: str, error: str) -> None:
        await self._call_event_handler("on_provider_error", service, error)
        self._llm_failures += 1
        if self._llm_failures < self._max_failures:
            await self.push_frame(TTSSpeakFrame(APOLOGY))
        else:
            await self._give_up()

    async def service_unusable(self, service: str) -> None:
        """A speech service stopped for good: end the call (once the pipeline runs)."""
        await self._call_event_handler(
            "on_provider_error", service, "gave up: it can no longer do its job"
        )
        if self._started:
            await self._give_up()
        else:
            self._give_up_on_start = True

    async def _give_up(self) -> None:
        if self._gave_up:
            return
        self._gave_up = True
        await self.push_frame(TTSSpeakFrame(GIVE_UP))
        await self.push_frame(EndWorkerFrame(reason="provider_error"))

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._started = True
            if self._give_up_on_start:
                await self._give_up()
            return
        if isinstance(frame, ErrorFrame) and direction == FrameDirection.UPSTREAM:
            name = frame.processor.name if frame.processor else "unknown"
            if isinstance(frame.processor, LLMService):
                await self.llm_failed(name, frame.error)
            else:
                await self._call_event_handler("on_provider_error", name, frame.error)
        await self.push_frame(frame, direction)
