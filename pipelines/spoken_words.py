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
from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.tts_service import TTSService

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


class AudioTimedWords(TTSService):
    """Mixin for a `TTSService` built with ``push_text_frames=False`` whose provider gives
    no word timestamps. Put it first in the bases.

    Each sentence's audio is cut at its words' starts (`word_times`) and each word is
    reported with `add_word_timestamps` between the pieces, so it follows the audio
    before it. Pipecat would release word frames by the clock from their timestamps;
    here every timed frame goes the audio's way instead (its timestamp cleared), so the
    output transport lets a word through only once the audio before it is written: the
    text keeps pace with the audio actually sent, however late a loaded machine sends it,
    and a reply's start, words and end stay in order.
    """

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if direction == FrameDirection.DOWNSTREAM:
            frame.pts = None
        await super().push_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        # Sentence by sentence, as Piper would synthesize it anyway, so each sentence's
        # audio goes out as soon as it is synthesized.
        for sentence in SENTENCE_END.split(text.strip()):
            async for frame in self._run_sentence(sentence, context_id):
                yield frame

    async def _run_sentence(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        audio = bytearray()
        async for frame in super().run_tts(text, context_id):
            if isinstance(frame, TTSAudioRawFrame):
                audio += frame.audio
            elif frame is not None:
                yield frame
        if not audio:
            return
        times = word_times(text, bytes(audio), self.sample_rate)
        if not times:  # nothing to say, yet some sound
            yield TTSAudioRawFrame(bytes(audio), self.sample_rate, 1, context_id=context_id)
            return
        cuts = [2 * int(t * self.sample_rate) for _, t in times[1:]] + [len(audio)]
        start = 0
        for (word, secs), end in zip(times, cuts, strict=True):
            await self.add_word_timestamps([(word, secs)], context_id)
            yield TTSAudioRawFrame(
                bytes(audio[start:end]), self.sample_rate, 1, context_id=context_id
            )
            start = end
