"""The direct WebSocket session protocol as a Pipecat frame serializer.

Binary frames carry 16-bit little-endian mono PCM at the client's sample rate, both
ways. Text frames carry JSON events (`{"type": ...}`); what the server sends is made
by `processors/session_events.py`, what the client may send is checked here.
"""

import json

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

from processors.frames import ClientProtocolErrorFrame

SAMPLE_RATES = (8000, 16000, 24000, 48000)
MAX_TEXT_CHARS = 64 * 1024

CLIENT_EVENTS = ("input.text", "tool.result", "session.end")


def check_client_event(text: str) -> dict | ClientProtocolErrorFrame:
    """The event a text frame carries, or the protocol error it is."""
    if len(text) > MAX_TEXT_CHARS:
        return ClientProtocolErrorFrame(
            "message_too_large", f"text frames are limited to {MAX_TEXT_CHARS} characters"
        )
    try:
        event = json.loads(text)
    except ValueError:
        return ClientProtocolErrorFrame("invalid_json", "text frames must be JSON events")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return ClientProtocolErrorFrame(
            "invalid_event", 'an event must be a JSON object with a string "type"'
        )
    kind = event["type"]
    if kind not in CLIENT_EVENTS:
        return ClientProtocolErrorFrame(
            "unknown_event", f"unknown event type '{kind}' (known: {', '.join(CLIENT_EVENTS)})"
        )
    if kind == "input.text" and not (isinstance(event.get("text"), str) and event["text"].strip()):
        return ClientProtocolErrorFrame(
            "invalid_event", "'input.text' needs a non-empty string 'text'"
        )
    if kind == "tool.result" and not (isinstance(event.get("call_id"), str) and "result" in event):
        return ClientProtocolErrorFrame(
            "invalid_event", "'tool.result' needs a string 'call_id' and a 'result'"
        )
    return event


class SessionProtocolSerializer(FrameSerializer):
    """Serializer for `WS /v1/agents/{id}/session` and a session's `websocket_url`."""

    def __init__(self, sample_rate: int = 16000):
        super().__init__()
        self._client_rate = sample_rate
        self._pipeline_rate = 0
        self._resampler = create_stream_resampler()
        self.hung_up = False
        """The client sent `session.end`: its socket closing next is a hang-up, not a drop."""

    async def setup(self, setup: FrameProcessorSetup):  # type: ignore[override]  # as Pipecat's FrameSerializer
        self._pipeline_rate = setup.audio_in_sample_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            # The output transport already runs at the client's rate.
            return frame.audio
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            if self.should_ignore_frame(frame):
                return None
            return json.dumps(frame.message)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes):
            if len(data) % 2:
                return ClientProtocolErrorFrame(
                    "invalid_audio", "audio frames must hold whole 16-bit samples (even length)"
                )
            if not data:
                return None
            audio = data
            if self._client_rate != self._pipeline_rate:
                audio = await self._resampler.resample(data, self._client_rate, self._pipeline_rate)
            return InputAudioRawFrame(audio=audio, sample_rate=self._pipeline_rate, num_channels=1)
        event = check_client_event(data)
        if isinstance(event, ClientProtocolErrorFrame):
            return event
        self.hung_up = self.hung_up or event["type"] == "session.end"
        return InputTransportMessageFrame(message=event)
