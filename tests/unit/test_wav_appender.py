"""Recording files (processors/recording.py WavAppender): a WAV that is playable after every
write, and that a resumed call appends to."""

import wave

import numpy as np
import pytest

from processors.recording import HEADER_BYTES, WavAppender

pytestmark = pytest.mark.storage_free


def read(path) -> tuple[tuple[int, int, int], np.ndarray]:
    """(channels, sample width, rate) and the samples, as any WAV reader sees them."""
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
        return shape, np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def stereo(first: int, count: int) -> bytes:
    return np.arange(first, first + 2 * count, dtype=np.int16).tobytes()


def test_a_file_closed_with_nothing_appended_is_an_empty_wav_of_the_given_format(tmp_path):
    path = tmp_path / "calls" / "ses_1.wav"  # its directory is made
    WavAppender(path, 8000, 2).close()
    assert path.stat().st_size == HEADER_BYTES
    shape, samples = read(path)
    assert shape == (2, 2, 8000) and len(samples) == 0


def test_the_header_is_true_after_every_write_before_any_close(tmp_path):
    path = tmp_path / "ses_1.wav"
    wav = WavAppender(path, 16000, 2)
    try:
        wav.append(stereo(0, 100))
        shape, samples = read(path)  # while the writer still holds the file open
        assert shape == (2, 2, 16000) and samples.tolist() == list(range(200))
        wav.append(stereo(200, 50))
        assert read(path)[1].tolist() == list(range(300))
        raw = path.read_bytes()
        assert int.from_bytes(raw[4:8], "little") == len(raw) - 8  # RIFF size
        assert int.from_bytes(raw[40:44], "little") == len(raw) - HEADER_BYTES  # data size
    finally:
        wav.close()


def test_reopening_appends_to_what_a_resumed_call_recorded(tmp_path):
    path = tmp_path / "ses_1.wav"
    first = WavAppender(path, 16000, 2)
    first.append(stereo(0, 100))
    first.close()
    again = WavAppender(path, 16000, 2)
    again.append(stereo(200, 100))
    again.close()
    shape, samples = read(path)
    assert shape == (2, 2, 16000) and samples.tolist() == list(range(400))


def test_a_file_too_short_to_hold_a_header_is_started_afresh(tmp_path):
    path = tmp_path / "ses_1.wav"
    path.write_bytes(b"RIFF\x00\x00")  # a crash before the header was whole
    wav = WavAppender(path, 24000, 1)
    wav.append(np.array([1, -1, 2], dtype=np.int16).tobytes())
    wav.close()
    assert read(path)[0] == (1, 2, 24000)
    assert read(path)[1].tolist() == [1, -1, 2]
