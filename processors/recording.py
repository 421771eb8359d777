"""Call recording: a stereo WAV per session, written as the call goes."""

import struct
import time
from pathlib import Path

import numpy as np
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

HEADER_BYTES = 44


class WavAppender:
    """A 16-bit PCM WAV file whose header is kept true after every write, so a crash
    leaves a playable file holding everything written so far. Reopening an existing
    file appends to it (a resumed session keeps one recording)."""

    def __init__(self, path: Path, sample_rate: int, channels: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        exists = path.exists() and path.stat().st_size >= HEADER_BYTES
        self._file = open(path, "r+b" if exists else "w+b")  # noqa: SIM115 - closed in close()
        if exists:
            self._data_bytes = path.stat().st_size - HEADER_BYTES
            self._file.seek(0, 2)
        else:
            self._data_bytes = 0
            self._file.write(_header(sample_rate, channels, 0))
        self._sample_rate = sample_rate
        self._channels = channels

    def append(self, pcm: bytes) -> None:
        self._file.write(pcm)
        self._data_bytes += len(pcm)
        self._file.seek(4)
        self._file.write(struct.pack("<I", 36 + self._data_bytes))
        self._file.seek(40)
        self._file.write(struct.pack("<I", self._data_bytes))
        self._file.seek(0, 2)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    block = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class CallRecorder(FrameProcessor):
    """Records the caller (left) and the agent (right) into ``path``, on one clock.

    Sits after the output transport, where it sees the caller's audio as it arrives
    and the agent's audio as it is sent. The caller's audio lands at the time it
    arrived. The agent's audio is sent ahead of playback (transports send faster
    than real time and the far end buffers it), so it lands back to back from the
    time it started, the way it plays; an interruption drops what had not played
    yet, as the far end does. Every ``flush_secs`` what has been heard so far is
    appended to the WAV.
    """

    def __init__(self, path: Path, sample_rate: int, flush_secs: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self._path = path
        self._rate = sample_rate
        self._flush_samples = int(sample_rate * flush_secs)
        self._wav: WavAppender | None = None
        self._started_at: float | None = None
        self._written = 0
        """Samples per channel already in the file."""
        self._caller = bytearray()
        self._agent = bytearray()
        """Each track's audio from sample ``_written`` on."""
        self._caller_resampler = create_stream_resampler()
        self._agent_resampler = create_stream_resampler()

    def _now(self) -> int:
        """Samples since the call started."""
        return int((time.monotonic() - self._started_at) * self._rate) if self._started_at else 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        if isinstance(frame, StartFrame):
            self._started_at = time.monotonic()
        elif isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            pcm = await self._caller_resampler.resample(frame.audio, frame.sample_rate, self._rate)
            self._place(self._caller, self._now() - len(pcm) // 2, pcm)
        elif isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            pcm = await self._agent_resampler.resample(frame.audio, frame.sample_rate, self._rate)
            self._place(self._agent, self._now(), pcm)
        elif isinstance(frame, InterruptionFrame):
            del self._agent[max(0, self._now() - self._written) * 2 :]

        if isinstance(frame, (EndFrame, CancelFrame)):
            self._write(max(len(self._caller), len(self._agent)) // 2)
        elif self._now() - self._written >= self._flush_samples:
            self._write(self._now() - self._written)

        await self.push_frame(frame, direction)

    def _place(self, track: bytearray, at: int, pcm: bytes) -> None:
        """Append `pcm` to a track at sample `at`, or right after what it holds if that is
        later (or only a little earlier)."""
        gap = (at - self._written) * 2 - len(track)
        if gap > self._rate // 10 * 2:  # past 100 ms: a real pause, not arrival jitter
            track.extend(bytes(gap))
        track.extend(pcm)

    def _write(self, samples: int) -> None:
        """Append the next `samples` per channel (silence where a track has nothing) to the file."""
        if samples <= 0:
            return
        stereo = np.zeros((samples, 2), dtype=np.int16)
        for channel, track in enumerate((self._caller, self._agent)):
            chunk = np.frombuffer(bytes(track[: samples * 2]), dtype=np.int16)
            stereo[: len(chunk), channel] = chunk
            del track[: samples * 2]
        if self._wav is None:
            self._wav = WavAppender(self._path, self._rate, 2)
        self._wav.append(stereo.tobytes())
        self._written += samples

    async def cleanup(self):
        await super().cleanup()
        if self._wav:
            self._wav.close()
            self._wav = None
