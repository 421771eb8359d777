"""Inbound session events from WebSocket clients (the direct session protocol)."""

from pipecat.frames.frames import (
    CancelWorkerFrame,
    Frame,
    InputTransportMessageFrame,
    InterruptionWorkerFrame,
    LLMMessagesAppendFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

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
        elif isinstance(frame, InputTransportMessageFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._handle_event(frame.message)
        else:
            await self.push_frame(frame, direction)

    async def _handle_event(self, event: dict):
        kind = event["type"]
        if kind == "input.text":
            await self.push_frame(InterruptionWorkerFrame(), FrameDirection.UPSTREAM)
            await self.push_frame(
                LLMMessagesAppendFrame(messages=[{"role": "user", "content": event["text"]}], run_llm=True)
            )
            await self._call_event_handler("on_user_text", event["text"])
        elif kind == "tool.result":
            await self._call_event_handler("on_tool_result", event["call_id"], event["result"])
        elif kind == "session.end":
            await self.push_frame(CancelWorkerFrame(reason="caller_hangup"), FrameDirection.UPSTREAM)
