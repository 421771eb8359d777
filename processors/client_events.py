"""Inbound session events from WebSocket clients (the direct session protocol)."""

from pipecat.frames.frames import (
    CancelWorkerFrame,
    Frame,
    InputTransportMessageFrame,
    LLMContextUserTurnFrame,
    LLMMessagesAppendFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.time import time_now_iso8601

from processors.frames import ClientProtocolErrorFrame


class ClientEventReceiver(FrameProcessor):
    """Acts on the client's JSON events; sits right after the input transport.

    - ``input.text``: a typed user turn. It interrupts the agent, joins the LLM
      context and runs the LLM; ``on_user_text`` fires so the call can record it.
    - ``tool.result``: fires ``on_tool_result(call_id, result)``.
    - ``session.end``: the caller hangs up; the call is cancelled with reason
      ``caller_hangup``.
    - a protocol error from the serializer becomes a ``session.error`` event.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._register_event_handler("on_user_text")
        self._register_event_handler("on_tool_result")

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        if isinstance(frame, ClientProtocolErrorFrame):
            await self.push_frame(
                OutputTransportMessageUrgentFrame(
                    message={"type": "session.error", "code": frame.code, "message": frame.message}
                )
            )
        elif (
            isinstance(frame, InputTransportMessageFrame) and direction == FrameDirection.DOWNSTREAM
        ):
            await self._handle_event(frame.message)
        else:
            await self.push_frame(frame, direction)

    async def _handle_event(self, event: dict):
        kind = event["type"]
        if kind == "input.text":
            text = event["text"]
            await self.broadcast_interruption()
            # Announced like a spoken turn, so per-turn processors (the turn limit) count it.
            await self.push_frame(LLMContextUserTurnFrame(text=text, timestamp=time_now_iso8601()))
            await self.push_frame(
                LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)
            )
            await self._call_event_handler("on_user_text", text)
        elif kind == "tool.result":
            await self._call_event_handler("on_tool_result", event["call_id"], event["result"])
        elif kind == "session.end":
            await self.push_frame(
                CancelWorkerFrame(reason="caller_hangup"), FrameDirection.UPSTREAM
            )
