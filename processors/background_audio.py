"""Ambience under the agent's voice: Pipecat's SoundfileMixer fed a loop at the call's rate."""

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from pipecat.audio.mixers.base_audio_mixer import BaseAudioMixer
from pipecat.audio.mixers.soundfile_mixer import SoundfileMixer
from pipecat.frames.frames import MixerControlFrame

LOOP_SECS = 8.0
ROOM_TONE_RMS = 1500.0
_CACHE_DIR = Path(tempfile.gettempdir()) / "switchboard-ambience"


def room_tone(sample_rate: int, seconds: float = LOOP_SECS) -> np.ndarray:
    """A soft, even room tone (low-passed noise, the same every time), as 16-bit samples whose
    end runs smoothly into its start, so it loops without a click."""
    rng = np.random.default_rng(21)
    noise = rng.standard_normal(int(sample_rate * seconds) + sample_rate)
    # One-pole low-pass at ~400 Hz: a hum of air and distant rooms rather than hiss.
    alpha = 1 - np.exp(-2 * np.pi * 400 / sample_rate)
    tone = np.empty_like(noise)
    level = 0.0
    for index, value in enumerate(noise):
        level += alpha * (value - level)
        tone[index] = level
    fade = sample_rate // 2  # crossfade the extra half second over the start
    loop = tone[: len(tone) - sample_rate].copy()
    ramp = np.linspace(0, 1, fade)
    loop[:fade] = loop[:fade] * ramp + tone[-sample_rate : -sample_rate + fade] * (1 - ramp)
    loop *= ROOM_TONE_RMS / np.sqrt(np.mean(loop**2))
    return np.clip(loop, -32768, 32767).astype(np.int16)


def loop_file(sample_rate: int, source: Path | None) -> Path:
    """A mono 16-bit WAV of `source` (or the room tone) at `sample_rate`, written once per rate."""
    name = "room-tone"
    if source:
        name = f"{source.stem}-{hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]}"
    path = _CACHE_DIR / f"{name}-{sample_rate}.wav"
    if not path.exists():
        if source is None:
            samples = room_tone(sample_rate)
        else:
            data, rate = sf.read(source, dtype="float32", always_2d=True)
            mono = data.mean(axis=1)
            resampled = soxr.resample(mono, rate, sample_rate) if rate != sample_rate else mono
            samples = np.clip(resampled * 32767, -32768, 32767).astype(np.int16)
        _CACHE_DIR.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial.wav")
        sf.write(partial, samples, sample_rate, subtype="PCM_16")
        partial.replace(path)
    return path


class BackgroundAudioMixer(BaseAudioMixer):
    """The output transport's mixer: a `SoundfileMixer` looping `source` (a sound file of any
    rate, or the generated room tone when None) at `volume`, made when the transport starts
    and its sample rate is known (SoundfileMixer needs a file at exactly that rate)."""

    def __init__(self, source: Path | None, volume: float):
        super().__init__()
        self._source = source
        self._volume = volume
        self._mixer: SoundfileMixer | None = None

    async def start(self, sample_rate: int):
        path = loop_file(sample_rate, self._source)
        self._mixer = SoundfileMixer(
            sound_files={"ambience": str(path)}, default_sound="ambience", volume=self._volume
        )
        await self._mixer.start(sample_rate)

    async def stop(self):
        if self._mixer:
            await self._mixer.stop()

    async def process_frame(self, frame: MixerControlFrame):
        if self._mixer:
            await self._mixer.process_frame(frame)

    async def mix(self, audio: bytes) -> bytes:
        return await self._mixer.mix(audio) if self._mixer else audio
