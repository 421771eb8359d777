"""Local Whisper speech-to-text over the process-wide model, transcribing speculatively.

Pipecat's segmented Whisper service transcribes a turn only once the VAD has heard
`stop_secs` of silence, so the caller waits for the VAD and then for Whisper. This one
starts transcribing when the caller falls quiet (`SPECULATE_AFTER_SECS` of audio far
below the turn's loudest), while the VAD is still waiting. If the caller speaks again,
the guess is dropped; if the VAD then ends the segment, its transcription is the guess,
usually finished by then.
"""

import concurrent.futures
import os

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.utils.types import assert_given

from pipelines import models
from pipelines.config import resolve_path
from pipelines.pipecat_compat import WhisperSTTServiceOnModel, segment_audio

# Speculative transcriptions of every call in the process; CTranslate2 releases the GIL.
_speculations = concurrent.futures.ThreadPoolExecutor(
    max_workers=os.cpu_count() or 1, thread_name_prefix="whisper"
)


def _float_audio(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


class WhisperDecoding:
    """A shared Whisper model seen through one call's decoding options, which can hold one
    speculative transcription: `transcribe` returns it for audio whose speech is the speech
    it was started on (what follows being the quiet tail and padding)."""

    def __init__(self, model, **options):
        self._model = model
        self._options = options
        self._speculation: tuple[np.ndarray, dict, concurrent.futures.Future] | None = None
        """(the speech, the options, the transcription) of the pending guess."""

    def __getattr__(self, name):
        return getattr(self._model, name)

    @property
    def speculating(self) -> bool:
        return self._speculation is not None

    def speculate(self, speech: np.ndarray, padding: np.ndarray, **kwargs) -> None:
        audio = np.concatenate([speech, padding])
        logger.debug(f"Whisper: speculating on {len(speech) / 16000:.2f} s of speech")
        self._speculation = (
            speech,
            kwargs,
            _speculations.submit(self._transcribe_now, audio, kwargs),
        )

    def cancel_speculation(self) -> None:
        self._speculation = None

    def transcribe(self, audio: np.ndarray, **kwargs):
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            speech, guessed_kwargs, result = speculation
            if guessed_kwargs == kwargs and np.array_equal(audio[: len(speech)], speech):
                logger.debug("Whisper: the segment is the speculative transcription's")
                return result.result()
            logger.debug("Whisper: the speculative transcription doesn't match the segment")
        return self._transcribe_now(audio, kwargs)

    def _transcribe_now(self, audio: np.ndarray, kwargs: dict):
        segments, info = self._model.transcribe(audio, **{**self._options, **kwargs})
        return list(segments), info


class SharedWhisperSTTService(WhisperSTTServiceOnModel):
    """`WhisperSTTService` over the process-wide model, decoding greedily (`beam_size` 1 is
    about a third faster than Whisper's 5 on a CPU) without timestamps (a turn's transcript
    doesn't use them), and transcribing speculatively once the caller falls quiet."""

    SPECULATE_AFTER_SECS = 0.1
    QUIET_RATIO = 0.03
    """A frame ~30 dB below the turn's loudest is quiet."""

    def __init__(
        self,
        *,
        settings: WhisperSTTService.Settings,
        beam_size: int = 5,
        device: str = "cpu",
        compute_type: str = "int8",
        trailing_silence_secs: float = 0.5,
        **kwargs,
    ):
        model = models.whisper_model(resolve_path(str(settings.model)), device, compute_type)
        self._decoding = WhisperDecoding(model, beam_size=beam_size, without_timestamps=True)
        self._padding_secs = trailing_silence_secs
        super().__init__(
            whisper_model=self._decoding,
            settings=settings,
            device=device,
            compute_type=compute_type,
            trailing_silence_secs=trailing_silence_secs,
            **kwargs,
        )
        self._speaking = False
        self._loudest = 0.0
        self._quiet_bytes = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
            self._loudest, self._quiet_bytes = 0.0, 0
            self._decoding.cancel_speculation()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
        await super().process_frame(frame, direction)

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        await super().process_audio_frame(frame, direction)
        if not self._speaking:
            return
        level = _rms(frame.audio)
        self._loudest = max(self._loudest, level)
        if level >= self._loudest * self.QUIET_RATIO:
            self._quiet_bytes = 0
            self._decoding.cancel_speculation()
            return
        self._quiet_bytes += len(frame.audio)
        if (
            self._quiet_bytes >= self.SPECULATE_AFTER_SECS * self.sample_rate * 2
            and not self._decoding.speculating
        ):
            # The same audio and options `WhisperSTTService.run_stt` will transcribe, minus the
            # quiet tail still to come, padded with silence as SegmentedSTTService pads a segment.
            settings = self.settings
            self._decoding.speculate(
                _float_audio(segment_audio(self)),
                np.zeros(int(self.sample_rate * self._padding_secs), dtype=np.float32),
                language=assert_given(settings.language),
                hotwords=assert_given(settings.hotwords),
                initial_prompt=assert_given(settings.initial_prompt),
            )
