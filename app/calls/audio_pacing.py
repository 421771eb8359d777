"""Caller audio may not run far ahead of real time.

A client (or a carrier stream) that sends audio faster than it could be spoken would
otherwise fill the input transport's queue and the speech buffers behind it without bound.
Each call's serializer passes its caller audio through a token bucket: audio arriving up to
`BURST_SECS` ahead of real time is fine (network jitter, a client catching up), the excess
is dropped. The first drop tells a session-protocol client with a `session.error`
(`audio_too_fast`); once more than `MAX_DROPPED_SECS` have been dropped, the call is
cancelled (ended `failed`, reason `error`).
"""

import time

from loguru import logger
from pipecat.frames.frames import CancelWorkerFrame, Frame, InputAudioRawFrame
from pipecat.serializers.base_serializer import FrameSerializer

from pipelines import pipecat_compat
from processors.frames import ClientProtocolErrorFrame

BURST_SECS = 5.0
MAX_DROPPED_SECS = 10.0


class RealTimeAudioGate:
    """A token bucket of audio seconds: refilled at real time, holding at most `BURST_SECS`."""

    def __init__(self, burst_secs: float = BURST_SECS, max_dropped_secs: float = MAX_DROPPED_SECS):
        self._burst = burst_secs
        self._max_dropped = max_dropped_secs
        self._credit = burst_secs
        self._last: float | None = None
        self.dropped_secs = 0.0

    def check(self, frame: InputAudioRawFrame) -> Frame | None:
        """The frame if it is within real time; else None (dropped), a protocol error on the
        first drop, or a cancel once the flood persists."""
        now = time.monotonic()
        self._credit = min(
            self._burst, self._credit + (now - self._last if self._last is not None else 0.0)
        )
        self._last = now
        secs = len(frame.audio) / 2 / frame.num_channels / frame.sample_rate
        if secs <= self._credit:
            self._credit -= secs
            return frame
        first_drop = self.dropped_secs == 0
        self.dropped_secs += secs
        if self.dropped_secs > self._max_dropped:
            message = f"caller audio kept arriving faster than real time ({self.dropped_secs:.0f}s dropped)"
            logger.warning(f"ending the call: {message}")
            self._max_dropped = float("inf")  # one cancel is enough
            return CancelWorkerFrame(reason=message)
        if first_drop:
            logger.warning("caller audio is arriving faster than real time: dropping the excess")
            return ClientProtocolErrorFrame(
                "audio_too_fast",
                "audio is arriving faster than real time; the excess is dropped (send it as it is spoken)",
            )
        return None


class AudioGrouper:
    """Joins each `frames` consecutive caller audio frames into one. Every frame costs each
    processor of the pipeline a queue hop and a call, whatever its length: a carrier's 20 ms
    frames passed on in pairs halve that work for ~10 ms more delay on average (the VAD reads
    32 ms windows anyway)."""

    def __init__(self, frames: int):
        self._frames = frames
        self._held: list[InputAudioRawFrame] = []

    def group(self, frame: InputAudioRawFrame) -> InputAudioRawFrame | None:
        """The joined frame once `frames` have come; None while they are held."""
        self._held.append(frame)
        if len(self._held) < self._frames:
            return None
        held, self._held = self._held, []
        return InputAudioRawFrame(
            audio=b"".join(f.audio for f in held),
            sample_rate=frame.sample_rate,
            num_channels=frame.num_channels,
        )


def with_grouped_audio(serializer: FrameSerializer, frames: int = 2) -> FrameSerializer:
    """The serializer, its caller audio passed on `frames` frames at a time (`AudioGrouper`)."""
    grouper = AudioGrouper(frames)
    return pipecat_compat.filter_deserialized(
        serializer,
        lambda frame: grouper.group(frame) if isinstance(frame, InputAudioRawFrame) else frame,
    )


def with_real_time_audio(serializer: FrameSerializer) -> FrameSerializer:
    """The serializer, its caller audio passed through a `RealTimeAudioGate`."""
    gate = RealTimeAudioGate()
    return pipecat_compat.filter_deserialized(
        serializer,
        lambda frame: gate.check(frame) if isinstance(frame, InputAudioRawFrame) else frame,
    )
