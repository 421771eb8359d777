"""Keypad presses (DTMF) reach the agent as text, so a prompt can offer a keypad menu."""

from pipecat.frames.frames import Frame, InputDTMFFrame, LLMMessagesAppendFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


def keypad_text(digit: str) -> str:
    return f"The caller pressed {digit}."


class KeypadToText(FrameProcessor):
    """Turns each ``InputDTMFFrame`` into a user message ("The caller pressed 3.") that
    runs the LLM at once, interrupting the agent if it is talking.

    Sits right after the input transport. Event ``on_keypad(processor, text)`` lets
    the call record the press in its transcript.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._register_event_handler("on_keypad")

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputDTMFFrame):
            await self.push_frame(frame, direction)
            return
        text = keypad_text(frame.button.value)
        await self.broadcast_interruption()
        await self._call_event_handler("on_keypad", text)
        await self.push_frame(
            LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)
        )
