"""Services that answer at once, for benchmarks that measure what the server itself adds.

`CannedSTTService` transcribes every speech segment as the same text, with no model;
`CannedTTSService` "speaks" a tone as long as the text would take to say. With a
scripted LLM around them, a call's time is the server's own: transport, VAD, turn
detection, aggregation and pacing.
"""

from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

from pipelines.pipecat_compat import stt_user_id
from pipelines.spoken_words import AudioTimedWords

TONE_RATE = 16000
SECS_PER_CHAR = 0.06


class CannedSTTService(SegmentedSTTService):
    def __init__(self, *, text: str, **kwargs):
        super().__init__(settings=STTSettings(model=None, language=None), **kwargs)
        self._text = text

    @property
    def wants_wav_segments(self) -> bool:
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        yield TranscriptionFrame(self._text, stt_user_id(self), time_now_iso8601())


class CannedTTSService(AudioTimedWords, TTSService):
    def __init__(self, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            push_text_frames=False,
            settings=TTSSettings(model=None, voice="tone", language=None),
            **kwargs,
        )

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        seconds = max(0.3, len(text) * SECS_PER_CHAR)
        t = np.arange(int(seconds * TONE_RATE)) / TONE_RATE
        tone = (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16).tobytes()

        async def chunks():
            yield tone

        async for frame in self._stream_audio_frames_from_iterator(
            chunks(), in_sample_rate=TONE_RATE, context_id=context_id
        ):
            await self.stop_ttfb_metrics()
            yield frame
