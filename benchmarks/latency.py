"""Latency as a caller on a Twilio line feels it, measured on the wire.

A Twilio Media Streams caller (the tests' client) dials an agent, waits for the
greeting, then says several complete utterances of the turn-taking corpus
(`benchmarks/turns_corpus.py`; each call takes the next ones, at rotating Piper speeds),
each after the agent's reply has finished, and finally barges in on a reply. Reported:

- greeting: stream start → first agent media frame with speech;
- voice-to-voice per turn: last caller frame with speech → first agent media frame with speech;
- barge-in: first caller frame with speech → Twilio `clear` received.

    .venv/bin/python -m benchmarks.latency --pipeline local     # the real offline models
    .venv/bin/python -m benchmarks.latency --pipeline instant   # canned STT/TTS + scripted LLM: the server's own time
"""

import argparse
import asyncio
import time

import httpx

from benchmarks import turns_corpus
from benchmarks.common import (
    benchmark_server,
    fmt,
    is_speech,
    machine,
    percentile,
    twilio_caller,
)
from tests.audio import speech
from tests.fakes.twilio_client import ulaw_encode

FRAME = 320  # 20 ms of 8 kHz 16-bit PCM
BARGE_IN = "Sorry, wait, one more question."
LONG_REPLY = " ".join(
    ["We are open from eight in the morning until six in the evening on weekdays."] * 4
)


def corpus_turns(call: int, turns: int) -> list[tuple[str, bytes]]:
    """The `call`-th call's utterances: the next `turns` complete ones of the corpus, as 8 kHz audio."""
    texts = [u.text for u in turns_corpus.utterances() if u.complete]
    speeds = turns_corpus.SPEEDS
    picked = [(call * turns + i) % len(texts) for i in range(turns)]
    return [(texts[i], turns_corpus.audio(texts[i], speeds[i % len(speeds)], 8000)) for i in picked]


def speech_frames(pcm: bytes) -> list[int]:
    """Indexes of the 20 ms frames of `pcm` that carry speech."""
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]
    return [i for i, frame in enumerate(frames) if is_speech(ulaw_encode(frame))]


async def first_agent_speech_after(client, since: float, timeout: float) -> float:
    """Arrival time of the first agent media frame with speech after `since` (each frame is looked at once)."""
    deadline = time.monotonic() + timeout
    index = next(
        (i for i, (at, _) in enumerate(client.media_log) if at > since), len(client.media_log)
    )
    while time.monotonic() < deadline:
        while index < len(client.media_log):
            at, payload = client.media_log[index]
            index += 1
            if is_speech(payload):
                return at
        await asyncio.sleep(
            0.02
        )  # the answer is the frame's arrival time, so polling needn't be finer
    raise TimeoutError("the agent did not answer")


async def agent_quiet(client, quiet_secs: float = 0.8, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = client.media_log[-1][0] if client.media_log else 0
        if time.monotonic() - last > quiet_secs:
            return
        await asyncio.sleep(0.05)


async def speak_then_silence(client, pcm: bytes) -> tuple[float, asyncio.Task]:
    """Send `pcm` at real time; return when its last speech frame left, and a task sending silence after it."""
    started = time.monotonic()
    await client.send_audio(pcm)
    last_speech_at = started + speech_frames(pcm)[-1] * 0.02
    return last_speech_at, asyncio.create_task(client.send_silence(30))


async def one_call(server, agent_id: str, questions: list[tuple[str, bytes]]) -> dict:
    client = twilio_caller(server, agent_id)
    result = {"turns": []}
    async with client:
        opened = time.monotonic()
        result["greeting"] = await first_agent_speech_after(client, opened, 30) - opened
        await agent_quiet(client)
        for text, pcm in questions:
            last_speech_at, silence = await speak_then_silence(client, pcm)
            answered = await first_agent_speech_after(client, last_speech_at, 60)
            result["turns"].append((text, answered - last_speech_at))
            await agent_quiet(client)
            silence.cancel()

        # Barge-in: ask, and talk over the answer once it has started.
        last_speech_at, silence = await speak_then_silence(client, questions[0][1])
        answered = await first_agent_speech_after(client, last_speech_at, 60)
        silence.cancel()
        await asyncio.sleep(max(0.0, answered + 0.4 - time.monotonic()))
        clears_before = len(client.events("clear"))
        barge = speech(BARGE_IN, sample_rate=8000)
        barge_started = time.monotonic() + speech_frames(barge)[0] * 0.02
        sending = asyncio.create_task(client.send_audio(barge))
        await client.wait_until(lambda: len(client.events("clear")) > clears_before, 10, "clear")
        clear_at = next(at for at, m in reversed(client.received) if m.get("event") == "clear")
        result["barge_in"] = clear_at - barge_started
        await sending
        await client.stop()
    await asyncio.sleep(1)
    session = httpx.get(
        f"{server.url}/v1/sessions/{client.session_id}", headers=server.headers
    ).json()
    result["server_turns"] = (session.get("latency") or {}).get("turns", [])
    return result


def report(pipeline: str, calls: list[dict]) -> None:
    print(f"\nLatency benchmark — pipeline '{pipeline}', {len(calls)} call(s)")
    print(f"machine: {machine()}")
    turns = [secs for call in calls for _, secs in call["turns"]]
    for index, call in enumerate(calls, start=1):
        print(
            f"call {index}: greeting {fmt(call['greeting'])}, barge-in → clear {fmt(call['barge_in'])}"
        )
        for number, (text, secs) in enumerate(call["turns"], start=1):
            print(f"  turn {number}: voice-to-voice {fmt(secs):>8}   ({text})")
    steady = [secs for call in calls for _, secs in call["turns"][1:]]
    greetings = [c["greeting"] for c in calls]
    barges = [c["barge_in"] for c in calls]
    print(
        f"voice-to-voice: p50 {fmt(percentile(turns, 50))}, p95 {fmt(percentile(turns, 95))}, "
        f"first response p50 {fmt(percentile([c['turns'][0][1] for c in calls], 50))}, "
        f"steady-state p50 {fmt(percentile(steady, 50))}"
    )
    print(f"greeting: p50 {fmt(percentile(greetings, 50))}, max {fmt(max(greetings))}")
    print(f"barge-in → clear: p50 {fmt(percentile(barges, 50))}, p95 {fmt(percentile(barges, 95))}")
    parts: dict[str, list[float]] = {}
    for call in calls:
        for turn in call["server_turns"]:
            for key, secs in turn["parts"].items():
                parts.setdefault(key, []).append(secs)
    if parts:
        print("where a turn's time goes, as the server measures it (p50 per part):")
        for key, values in parts.items():
            print(f"  {key:<24} {fmt(percentile(values, 50)):>8}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", choices=["local", "instant"], default="local")
    parser.add_argument("--calls", type=int, default=3, help="calls, one after another")
    parser.add_argument("--turns", type=int, default=4)
    args = parser.parse_args()

    prompt = "You are a dental clinic's receptionist. Answer in one short sentence."
    with benchmark_server(args.pipeline, LONG_REPLY, prompt) as (server, agent_id):
        calls = [
            await one_call(server, agent_id, corpus_turns(call, args.turns))
            for call in range(args.calls)
        ]
        report(args.pipeline, calls)


if __name__ == "__main__":
    asyncio.run(main())
