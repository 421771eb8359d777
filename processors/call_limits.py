"""Call controls that end a call on a clock: maximum duration and caller inactivity."""

import asyncio
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    LLMContextUserTurnFrame,
    StartFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

Sleep = Callable[[float], Awaitable[None]]


class _EndingProcessor(FrameProcessor):
    """Speaks a goodbye, then asks the worker to end with a reason (once)."""

    def __init__(self, *, sleep: Sleep = asyncio.sleep, **kwargs):
        super().__init__(**kwargs)
        self._sleep = sleep
        self._ending = False

    async def _say(self, text: str) -> None:
        await self.push_frame(TTSSpeakFrame(text))

    async def _end(self, goodbye: str, reason: str) -> None:
        if self._ending:
            return
        self._ending = True
        await self._say(goodbye)
        await self.push_frame(EndWorkerFrame(reason=reason), FrameDirection.UPSTREAM)


class MaxDurationLimiter(_EndingProcessor):
    """Ends the call ``max_secs`` after the pipeline starts: goodbye, then reason ``max_duration``.

    ``sleep`` is the clock; tests may inject a faster one.
    """

    def __init__(self, max_secs: float, goodbye: str, **kwargs):
        super().__init__(**kwargs)
        self._max_secs = max_secs
        self._goodbye = goodbye
        self._timer: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._timer is None:
            self._timer = self.create_task(self._expire(), name="max_duration")
        await self.push_frame(frame, direction)

    async def _expire(self) -> None:
        await self._sleep(self._max_secs)
        await self._end(self._goodbye, "max_duration")

    async def cleanup(self):
        await super().cleanup()
        if self._timer:
            await self.cancel_task(self._timer)
            self._timer = None


class InactivityMonitor(_EndingProcessor):
    """Acts when nobody has spoken for ``timeout_secs``; sits after the user aggregator.

    The clock runs whenever neither side is speaking and no tool is running, from
    the start of the call. ``action`` is ``end_call`` (goodbye, then end with reason
    ``inactivity``) or ``prompt`` (ask once whether the caller is still there; if
    the silence goes on for another ``timeout_secs``, end as above).
    """

    def __init__(self, timeout_secs: float, action: str, *, prompt: str, goodbye: str, **kwargs):
        super().__init__(**kwargs)
        self._timeout = timeout_secs
        self._action = action
        self._prompt = prompt
        self._goodbye = goodbye
        self._prompted = False
        self._user_speaking = False
        self._bot_speaking = False
        self._tools_running = 0
        self._timer: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

        if isinstance(frame, StartFrame):
            await self._restart()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_speaking, self._prompted = True, False
            await self._stop()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._user_speaking = False
            await self._restart()
        elif isinstance(frame, LLMContextUserTurnFrame):
            self._prompted = False  # a typed turn counts as the caller being there
            await self._restart()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            await self._stop()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            await self._restart()
        elif isinstance(frame, FunctionCallsStartedFrame) and direction == FrameDirection.UPSTREAM:
            self._tools_running += len(frame.function_calls)
            await self._stop()
        elif isinstance(frame, FunctionCallResultFrame) and direction == FrameDirection.UPSTREAM:
            self._tools_running = max(0, self._tools_running - 1)
            await self._restart()

    async def _restart(self) -> None:
        await self._stop()
        if not (self._user_speaking or self._bot_speaking or self._tools_running or self._ending):
            self._timer = self.create_task(self._expire(), name="inactivity")

    async def _stop(self) -> None:
        if self._timer:
            await self.cancel_task(self._timer)
            self._timer = None

    async def _expire(self) -> None:
        await self._sleep(self._timeout)
        self._timer = None
        if self._action == "prompt" and not self._prompted:
            self._prompted = True
            await self._say(self._prompt)
            await self._restart()  # counts from now until the prompt is spoken, then from its end
        else:
            await self._end(self._goodbye, "inactivity")

    async def cleanup(self):
        await super().cleanup()
        await self._stop()
