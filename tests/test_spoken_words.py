"""Word timings from a TTS chunk's audio (`pipelines/spoken_words.py`)."""

import numpy as np
import pytest

from pipelines.spoken_words import word_times

pytestmark = pytest.mark.storage_free

RATE = 16000


def chunk(lead: float, voiced: float, tail: float) -> bytes:
    """Silence, a loud tone, silence: 16-bit mono PCM."""
    tone = (8000 * np.sin(np.arange(int(voiced * RATE)) / 5)).astype(np.int16)
    silence = np.zeros
    return np.concatenate(
        [silence(int(lead * RATE), np.int16), tone, silence(int(tail * RATE), np.int16)]
    ).tobytes()


def test_words_share_the_voiced_span_by_length():
    times = word_times("Hi there, wonderful people.", chunk(0.5, 2.0, 0.5), RATE)
    assert [w for w, _ in times] == ["Hi", "there,", "wonderful", "people."]
    starts = [t for _, t in times]
    assert starts[0] == pytest.approx(0.5, abs=0.01)  # the leading silence is skipped
    assert starts == sorted(starts) and starts[-1] < 2.5
    gaps = np.diff(starts)
    # Weights: a word's letters, a space, and a pause after punctuation (3, 11, 10, 12).
    assert gaps[0] < gaps[2] < gaps[1] and gaps[1] == pytest.approx(2.0 * 11 / 36, abs=0.01)


def test_no_words_or_no_audio_times_nothing():
    assert word_times("   ", chunk(0.1, 0.5, 0.1), RATE) == []
    assert word_times("Hello.", b"", RATE) == []
    # All silence: the words share the whole chunk.
    assert word_times("Hello there", bytes(RATE * 2), RATE)[1][1] == pytest.approx(0.5, abs=0.01)
