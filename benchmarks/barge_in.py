"""Barge-in while the agent is busy: a Twilio caller talks over long replies at several points.

Each call asks for a long answer, then cuts in `--points` seconds after the agent's first audible
frame (by default 0.3, 0.6, 1.0 and 2.0 s: early points land while the LLM and the TTS are still
producing the rest of the reply). Measured on the wire: the caller's first frame with speech → the
Twilio `clear` that stops the agent. Printed per point and overall, and written as JSON to
`benchmarks/results/<date>-<machine>-barge-in-<pipeline>.json`.

    .venv/bin/python -m benchmarks.barge_in --pipeline local --calls 3
"""

import argparse
import asyncio
import json
import platform
import time
from datetime import date
from pathlib import Path

from benchmarks.common import benchmark_server, fmt, machine, percentile, twilio_caller
from benchmarks.latency import (
    LONG_REPLY,
    agent_quiet,
    first_agent_speech_after,
    speak_then_silence,
    speech_frames,
)
from tests.audio import speech

QUESTION = "Can you tell me all about your opening hours and the services you offer?"
BARGE_IN = "Sorry, wait, one more question."
RESULTS = Path(__file__).parent / "results"


async def one_call(server, agent_id: str, points: list[float]) -> list[tuple[float, float]]:
    """(point, seconds from the caller's first speech frame to `clear`) for each point."""
    question = speech(QUESTION, sample_rate=8000)
    barge = speech(BARGE_IN, sample_rate=8000)
    barge_lead = speech_frames(barge)[0] * 0.02
    client = twilio_caller(server, agent_id)
    results = []
    async with client:
        await first_agent_speech_after(client, time.monotonic(), 60)  # the greeting
        await agent_quiet(client)
        for point in points:
            last_speech_at, silence = await speak_then_silence(client, question)
            answered = await first_agent_speech_after(client, last_speech_at, 60)
            await asyncio.sleep(max(0.0, answered + point - barge_lead - time.monotonic()))
            silence.cancel()
            clears_before = len(client.events("clear"))
            barge_started = time.monotonic() + barge_lead
            sending = asyncio.create_task(client.send_audio(barge))
            await client.wait_until(
                lambda n=clears_before: len(client.events("clear")) > n, 10, "clear"
            )
            clear_at = next(at for at, m in reversed(client.received) if m.get("event") == "clear")
            results.append((point, clear_at - barge_started))
            await sending
            silence = asyncio.create_task(client.send_silence(30))
            await agent_quiet(client)  # the answer to the barge-in
            silence.cancel()
        await client.stop()
    return results


def report(pipeline: str, points: list[float], barges: list[tuple[float, float]]) -> dict:
    everything = [secs for _, secs in barges]
    print(f"\nBarge-in benchmark — pipeline '{pipeline}', {len(barges)} barge-ins")
    print(f"machine: {machine()}")
    rows = {}
    for point in points:
        at_point = [secs for p, secs in barges if p == point]
        rows[str(point)] = at_point
        print(
            f"  {point:.1f} s into the reply: p50 {fmt(percentile(at_point, 50))}, "
            f"max {fmt(max(at_point))}  ({', '.join(fmt(s) for s in at_point)})"
        )
    print(
        f"barge-in → clear: p50 {fmt(percentile(everything, 50))}, "
        f"p95 {fmt(percentile(everything, 95))}, max {fmt(max(everything))}"
    )
    return {
        "pipeline": pipeline,
        "machine": machine(),
        "date": date.today().isoformat(),
        "barge_in_secs_by_point": rows,
        "p50": percentile(everything, 50),
        "p95": percentile(everything, 95),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", choices=["local", "instant"], default="local")
    parser.add_argument("--calls", type=int, default=3, help="calls, one after another")
    parser.add_argument("--points", type=float, nargs="+", default=[0.3, 0.6, 1.0, 2.0])
    args = parser.parse_args()

    prompt = "You are a dental clinic's receptionist. Answer in detail, in four or five sentences."
    with benchmark_server(args.pipeline, LONG_REPLY, prompt) as (server, agent_id):
        barges = []
        for _ in range(args.calls):
            barges += await one_call(server, agent_id, args.points)
        result = report(args.pipeline, args.points, barges)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{result['date']}-{platform.node()}-barge-in-{args.pipeline}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    asyncio.run(main())
