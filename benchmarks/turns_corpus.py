"""The turn-taking corpus: caller utterances from `benchmarks/turns/`, spoken by Piper.

`complete.txt` holds whole caller turns; `unfinished.txt` holds turns the caller breaks off
(`start | continuation`), the continuation being said after a pause. Each text is
synthesized with the tests' Piper voice at several speeds (Piper's `length_scale`), as
16 kHz PCM and as an 8 kHz telephony copy that has been through G.711 μ-law and back,
into a cache directory outside the repository (`SWITCHBOARD_TURNS_CACHE`, default
`~/.cache/switchboard/turns`).

    .venv/bin/python -m benchmarks.turns_corpus            # synthesize what is missing
    .venv/bin/python -m benchmarks.turns_corpus --list     # print the corpus
"""

import argparse
import hashlib
import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from tests.fakes.twilio_client import ulaw_decode, ulaw_encode

TEXTS = Path(__file__).parent / "turns"
SPEEDS = (0.85, 1.0, 1.2)
"""Piper `length_scale`s: faster than the voice's default, the default, slower."""
RATES = (16000, 8000)
LEAD_SECS = 0.3


@dataclass(frozen=True)
class Utterance:
    text: str
    continuation: str | None = None
    """What an unfinished caller says after the pause; None for a complete turn."""

    @property
    def complete(self) -> bool:
        return self.continuation is None


def _lines(name: str) -> list[str]:
    lines = (TEXTS / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def utterances() -> list[Utterance]:
    """The corpus: complete turns first, then unfinished ones."""
    unfinished = [line.split("|", 1) for line in _lines("unfinished.txt")]
    return [Utterance(text) for text in _lines("complete.txt")] + [
        Utterance(start.strip(), rest.strip()) for start, rest in unfinished
    ]


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "switchboard" / "turns"
    return Path(os.environ.get("SWITCHBOARD_TURNS_CACHE", default))


def _path(text: str, speed: float, rate: int) -> Path:
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    suffix = "ulaw" if rate == 8000 else "pcm"
    return cache_dir() / f"{digest}-{speed:.2f}-{rate // 1000}k-{suffix}.wav"


def _synthesize(text: str, speed: float) -> tuple[np.ndarray, int]:
    from piper.config import SynthesisConfig

    from tests.audio import _voice

    voice = _voice()
    chunks = voice.synthesize(text, syn_config=SynthesisConfig(length_scale=speed))
    pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
    return np.frombuffer(pcm, dtype=np.int16), voice.config.sample_rate


def _write(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype(np.int16).tobytes())
    tmp.replace(path)


def synthesize(text: str, speed: float) -> None:
    """Write `text` at `speed` as 16 kHz PCM and as 8 kHz μ-law-round-tripped PCM."""
    samples, voice_rate = _synthesize(text, speed)
    for rate in RATES:
        resampled = soxr.resample(samples, voice_rate, rate).astype(np.int16)
        audio = np.concatenate([np.zeros(int(LEAD_SECS * rate), dtype=np.int16), resampled])
        if rate == 8000:
            audio = np.frombuffer(ulaw_decode(ulaw_encode(audio.tobytes())), dtype=np.int16)
        _write(_path(text, speed, rate), audio, rate)


def audio(text: str, speed: float, rate: int) -> bytes:
    """16-bit mono PCM of `text` at `speed` and `rate` (8000: through μ-law and back),
    with `LEAD_SECS` of silence before it; synthesized into the cache when missing."""
    path = _path(text, speed, rate)
    if not path.exists():
        synthesize(text, speed)
    with wave.open(str(path), "rb") as clip:
        return clip.readframes(clip.getnframes())


def texts() -> list[str]:
    return [t for u in utterances() for t in (u.text, u.continuation) if t]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list", action="store_true", help="print the corpus and exit")
    args = parser.parse_args()
    corpus = utterances()
    if args.list:
        for u in corpus:
            print(u.text if u.complete else f"{u.text} … {u.continuation}")
        return
    made = 0
    for text in texts():
        for speed in SPEEDS:
            if not all(_path(text, speed, rate).exists() for rate in RATES):
                synthesize(text, speed)
                made += 1
    complete = sum(u.complete for u in corpus)
    print(
        f"{len(corpus)} utterances ({complete} complete, {len(corpus) - complete} unfinished), "
        f"{len(SPEEDS)} speeds × {len(RATES)} rates; synthesized {made} clip(s) into {cache_dir()}"
    )


if __name__ == "__main__":
    main()
