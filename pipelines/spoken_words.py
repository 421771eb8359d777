"""Word timings for text-to-speech services that report none (Piper, the canned tone).

Pipecat sends such a service's text downstream only behind the audio of the chunk it
spoke, so when the caller cuts in mid-chunk the chunk never reaches the transcript or
the LLM context: a reply interrupted in its first sentence vanished. Services with word
timestamps (Cartesia) have each word released by the output transport as its audio
plays, and an interruption keeps exactly the words played so far. `AudioTimedWords`
gives a service without them the same, timing each word from the chunk's audio.
"""

import re
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection

SILENCE_LEVEL = 300
"""Sample amplitude (16-bit) below which audio counts as the silence around speech."""
PAUSE_CHARS = 4
"""The pause after a word ending a clause or sentence, in characters' worth of speech."""
PAUSE_MARKS = ",;:.!?"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def word_times(text: str, audio: bytes, sample_rate: int) -> list[tuple[str, float]]:
    """Each word of `text` with the second its speech starts in `audio` (16-bit mono PCM):
    the audio's voiced span shared among the words by their length, with a pause after
    punctuation."""
    words = text.split()
    samples = np.abs(np.frombuffer(audio, dtype=np.int16).astype(np.int32))
    if not words or not len(samples):
        return []
    voiced = np.flatnonzero(samples > SILENCE_LEVEL)
    first, last = (voiced[0], voiced[-1]) if len(voiced) else (0, len(samples) - 1)
    start, span = first / sample_rate, (last - first) / sample_rate
    weights = [len(w) + 1 + (PAUSE_CHARS if w[-1] in PAUSE_MARKS else 0) for w in words]
    before = np.concatenate([[0], np.cumsum(weights)[:-1]]) / sum(weights)
    return [(word, float(start + span * share)) for word, share in zip(words, before, strict=True)]


class AudioTimedWords:
    """Mixin for a `TTSService` built with ``push_text_frames=False`` whose provider gives
    no word timestamps: each sentence's words are timed from its audio and reported with
    `add_word_timestamps`, as a provider with word timestamps would. Put it first in
    the bases.

    Pipecat times a context's words from its first audio, or from the previous
    context's last word if that is later; this mixin knows where the audio itself
    plays: after the previous context's audio (not its last word's start), and a
    sentence synthesized after the one before it finished playing starts when its
    audio came (the caller heard a gap).
    """

    _timed_context: str | None = None
    _timed_start_ns: int = 0
    """Clock time the timed context's audio starts playing."""
    _timed_secs: float = 0.0
    """Seconds of the timed context's audio so far (gaps included)."""
    _base_secs: float = 0.0
    """Where the timed context's audio starts, in seconds after Pipecat's word baseline."""
    _last_word_ns: int = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InterruptionFrame):
            # Audio queued to play is dropped: what comes next plays at once.
            self._timed_context, self._timed_start_ns, self._timed_secs = None, 0, 0.0
            self._last_word_ns = 0
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if isinstance(frame, LLMFullResponseStartFrame) and frame.pts is None:
            # Pipecat sends a reply's end through the output transport's clock, behind its
            # last word, but its start behind the audio before it. Were the audio late on
            # the clock (a loaded machine), the start would reach the assistant aggregator
            # after the end, and the reply would never be recorded: so the start also
            # goes by the clock, right behind the words (and end) of what played before.
            frame.pts = self._word_timestamp_tracker.last_pts + 2
        await super().push_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        # Sentence by sentence, as Piper would synthesize it anyway, so each sentence's
        # words are timed as soon as its audio is out.
        for sentence in SENTENCE_END.split(text.strip()):
            async for frame in self._run_timed(sentence, context_id):
                yield frame

    async def _run_timed(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        audio, offset = bytearray(), None
        async for frame in super().run_tts(text, context_id):
            if isinstance(frame, TTSAudioRawFrame):
                if offset is None:
                    offset = self._sentence_offset(context_id)
                audio += frame.audio
            yield frame
        if offset is None:
            return
        self._timed_secs = offset + len(audio) / 2 / self.sample_rate
        times = [(w, offset + t) for w, t in word_times(text, bytes(audio), self.sample_rate)]
        if times:
            self._last_word_ns = self._timed_start_ns + int(times[-1][1] * 1e9)
            await self.add_word_timestamps([(w, self._base_secs + t) for w, t in times], context_id)

    def _sentence_offset(self, context_id: str) -> float:
        """Where a sentence whose first audio comes now starts in its context, in seconds."""
        now = self.get_clock().get_time()
        if context_id != self._timed_context:
            start = max(now, self._timed_start_ns + int(self._timed_secs * 1e9))
            self._base_secs = (start - max(now, self._last_word_ns)) / 1e9
            self._timed_context, self._timed_start_ns, self._timed_secs = context_id, start, 0.0
            return 0.0
        return max(self._timed_secs, (now - self._timed_start_ns) / 1e9)
