"""What a phone call's input path costs at a 16 kHz pipeline against the carriers' own 8 kHz.

Every 20 ms of a caller's 8 kHz audio goes through the carrier serializer's resampler (soxr,
quick quality, as `app/telephony/stream.py` sets it; a no-op at 8 kHz) and Silero VAD at the
pipeline's rate. This feeds a synthesized caller through both, at each rate, and prints the CPU
time per second of caller audio (best of `--rounds`). `services.phone_input_rate` picks 8 kHz when
every service that hears the caller takes it (e.g. `cloud`: Silero, Smart Turn, Deepgram).

    .venv/bin/python -m benchmarks.phone_input
"""

import argparse
import asyncio
import time

from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
from pipecat.audio.vad.vad_analyzer import VADParams

from benchmarks.common import machine
from pipelines import models, pipecat_compat
from tests.audio import speech

CARRIER_RATE = 8000
FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit audio


async def cpu_per_audio_second(frames: list[bytes], rate: int) -> float:
    vad = pipecat_compat.silero_vad_analyzer(models.silero_session(), VADParams())
    vad.set_sample_rate(rate)
    resampler = SOXRStreamAudioResampler(quality="QQ")
    started = time.process_time()
    for frame in frames:
        await vad.analyze_audio(await resampler.resample(frame, CARRIER_RATE, rate))
    return (time.process_time() - started) / (len(frames) * 0.02)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    caller = speech("What time do you open tomorrow? I'd like to book a cleaning.", CARRIER_RATE)
    audio = caller * 10
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio) - FRAME_BYTES, FRAME_BYTES)]
    print(f"machine: {machine()}; {len(frames) * 0.02:.0f} s of caller audio per round")
    best = {}
    for rate in (16000, CARRIER_RATE):
        best[rate] = min([await cpu_per_audio_second(frames, rate) for _ in range(args.rounds)])
        print(
            f"pipeline input {rate} Hz: {best[rate] * 1000:.2f} ms CPU per second of caller audio"
        )
    saved = best[16000] - best[CARRIER_RATE]
    print(f"saved at 8 kHz: {saved * 1000:.2f} ms per call-second ({saved / best[16000]:.0%})")


if __name__ == "__main__":
    asyncio.run(main())
