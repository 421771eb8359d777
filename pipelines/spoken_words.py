"""Word timings for text-to-speech services that report none (Piper, the canned tone).

Pipecat sends such a service's text downstream only behind the audio of the chunk it
spoke, so when the caller cuts in mid-chunk the chunk never reaches the transcript or
the LLM context: a reply interrupted in its first sentence vanished. Services with word
timestamps (Cartesia) have each word released by the output transport as its audio
plays, and an interruption keeps exactly the words played so far. `AudioTimedWords`
gives a service without them the same, timing each word from the chunk's audio.
"""

from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import Frame, TTSAudioRawFrame

SILENCE_LEVEL = 300
"""Sample amplitude (16-bit) below which audio counts as the silence around speech."""
PAUSE_CHARS = 4
"""The pause after a word ending a clause or sentence, in characters' worth of speech."""
PAUSE_MARKS = ",;:.!?"


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
    no word timestamps: each chunk's words are timed from its audio and reported with
    `add_word_timestamps`, as a provider with word timestamps would. Put it first in
    the bases.

    Times are seconds from the audio context's first audio, as Pipecat expects. A
    chunk follows the one before it, unless it was synthesized after that one had
    finished playing (the caller heard a gap): then it starts when its audio came.
    """

    _timed_context: str | None = None
    _timed_start_ns: int = 0
    _timed_secs: float = 0.0
    """Seconds of the timed context's audio so far (gaps included)."""

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        audio, offset = bytearray(), None
        async for frame in super().run_tts(text, context_id):
            if isinstance(frame, TTSAudioRawFrame):
                if offset is None:
                    offset = self._chunk_offset(context_id)
                audio += frame.audio
            yield frame
        if offset is None:
            return
        self._timed_secs = offset + len(audio) / 2 / self.sample_rate
        times = word_times(text, bytes(audio), self.sample_rate)
        await self.add_word_timestamps([(w, offset + t) for w, t in times], context_id)

    def _chunk_offset(self, context_id: str) -> float:
        """Where a chunk whose first audio comes now starts in its context, in seconds."""
        now = self.get_clock().get_time()
        if context_id != self._timed_context:
            self._timed_context, self._timed_start_ns, self._timed_secs = context_id, now, 0.0
            return 0.0
        return max(self._timed_secs, (now - self._timed_start_ns) / 1e9)
