"""Turn-taking over the corpus (`benchmarks/turns_corpus.py`): does the agent answer a
finished caller at once, and wait for one who isn't finished?

Each utterance is played, at real-time pace, to a real server over the Twilio stream
(8 kHz μ-law) and over the session WebSocket (16 kHz), by callers that keep sending
silence after it. Reported per pipeline and transport:

- complete utterances: turn detection, the server's voice-to-voice for the turn minus its
  known parts (the VAD's `stop_secs` wait, transcription, LLM, speech synthesis), i.e. the
  time the turn decision itself took; its p50/p90/max and the share over 1 s;
  voice-to-voice as the caller hears it (last speech frame → first agent audio);
- unfinished utterances (said, then ~1 s of silence, then the continuation): the share cut
  off, i.e. answered before the caller finished the continuation.

    .venv/bin/python -m benchmarks.turns --pipeline instant --sample 30
    .venv/bin/python -m benchmarks.turns --pipeline instant --pipeline local   # whole corpus
"""

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from app.client import SessionClient
from benchmarks import turns_corpus
from benchmarks.common import (
    BENCH_PIPELINES,
    SPEECH_RMS,
    fmt,
    is_speech,
    machine,
    percentile,
    server_turns,
    twilio_caller,
)
from tests.fakes.scripted_llm import ScriptedLLM
from tests.helpers.servers import start_server

RESULTS = Path(__file__).parent / "results"
PAUSE_SECS = 1.0
"""Silence between an unfinished utterance's last word and its continuation's first."""
REPLY = "Sure, I can help with that."
UTTERANCES_PER_CALL = 12
NOT_COUNTED_AS_DECISION = (
    "endpointing_wait",
    "transcription",
    "llm_inference",
    "sentence_aggregation",  # the LLM writing its first clause
    "speech_synthesis",
)


def speech_span(pcm: bytes, rate: int) -> tuple[float, float]:
    """Start and end (seconds into `pcm`) of its audible speech, by 20 ms frames."""
    frame = rate // 50
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    loud = [
        i
        for i in range(len(samples) // frame)
        if np.sqrt(np.mean(samples[i * frame : (i + 1) * frame] ** 2)) > SPEECH_RMS
    ]
    return loud[0] * 0.02, (loud[-1] + 1) * 0.02


class Caller:
    """One call over a transport: plays audio at real time, then silence, and notes the
    arrival time of every frame of the agent's speech."""

    rate = 16000

    def speech_times(self) -> list[float]:
        raise NotImplementedError

    async def play(self, pcm: bytes) -> float:
        """Start playing `pcm` (then silence); return the monotonic time it started."""
        if self._silence:
            self._silence.cancel()
        started = time.monotonic()
        self._silence = asyncio.create_task(self._play_then_silence(pcm))
        return started

    async def first_speech_after(self, since: float, within: float) -> float | None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            later = [at for at in self.speech_times() if at > since]
            if later:
                return later[0]
            await asyncio.sleep(0.02)
        return None

    async def quiet(self, secs: float = 0.8, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            times = self.speech_times()
            if not times or time.monotonic() - times[-1] > secs:
                return
            await asyncio.sleep(0.05)


class TwilioCaller(Caller):
    rate = 8000

    def __init__(self, server, agent_id: str):
        self.client = twilio_caller(server, agent_id)
        self.session_id = self.client.session_id
        self._silence: asyncio.Task | None = None
        self._speech: list[float] = []
        self._looked_at = 0

    async def __aenter__(self):
        await self.client.open()
        return self

    async def __aexit__(self, *exc):
        if self._silence:
            self._silence.cancel()
        await self.client.close()

    def speech_times(self) -> list[float]:
        # Each frame is decoded once: rescanning the whole call's audio at every poll cost
        # the caller more CPU with every turn (40 % of a core after twelve), which slowed
        # the niced llama.cpp server beside it and so the voice-to-voice measured.
        log = self.client.media_log
        self._speech += [at for at, payload in log[self._looked_at :] if is_speech(payload)]
        self._looked_at = len(log)
        return self._speech

    async def _play_then_silence(self, pcm: bytes) -> None:
        await self.client.send_audio(pcm)
        await self.client.send_silence(60)


class SessionCaller(Caller):
    def __init__(self, server, agent_id: str):
        session = httpx.post(
            f"{server.url}/v1/agents/{agent_id}/sessions", headers=server.headers
        ).json()
        self.session_id = session["session_id"]
        self.client = SessionClient(session["websocket_url"])
        self._silence: asyncio.Task | None = None

    async def __aenter__(self):
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc):
        if self._silence:
            self._silence.cancel()
        await self.client.close()

    def speech_times(self) -> list[float]:
        return [at for at, _ in self.client.audio_log]

    async def _play_then_silence(self, pcm: bytes) -> None:
        await self.client.stream(pcm)
        await self.client.stream_silence(60)


TRANSPORTS = {"twilio": TwilioCaller, "websocket": SessionCaller}


def decision_secs(turn: dict) -> float:
    return turn["voice_to_voice_secs"] - sum(
        turn["parts"].get(key, 0.0) for key in NOT_COUNTED_AS_DECISION
    )


async def one_utterance(server, caller: Caller, utterance, speed: float) -> dict:
    rate = caller.rate
    first = turns_corpus.audio(utterance.text, speed, rate)
    result = {"text": utterance.text, "speed": speed, "complete": utterance.complete}
    await caller.quiet()
    turns_before = len(await server_turns(server, caller.session_id))
    _, first_end = speech_span(first, rate)
    if utterance.complete:
        pcm = first
        caller_done = first_end
    else:
        rest = turns_corpus.audio(utterance.continuation, speed, rate)
        rest_start, rest_end = speech_span(rest, rate)
        gap = max(0.0, PAUSE_SECS - rest_start - (len(first) / 2 / rate - first_end))
        pcm = first + bytes(int(gap * rate) * 2) + rest
        caller_done = len(first) / 2 / rate + gap + rest_end
        result["continuation"] = utterance.continuation
    started = await caller.play(pcm)
    answered = await caller.first_speech_after(started + first_end, within=caller_done + 8)
    if answered is None:
        result["answered"] = False
        return result
    result["answered"] = True
    result["voice_to_voice_secs"] = answered - (started + caller_done)
    if not utterance.complete:
        result["cut_off"] = answered < started + caller_done
    await caller.quiet()
    await asyncio.sleep(0.3)  # the server stores the turn's latency after its first audio
    new_turns = (await server_turns(server, caller.session_id))[turns_before:]
    if new_turns:
        result["server_turn"] = new_turns[0]
        result["turn_detection_secs"] = decision_secs(new_turns[0])
    return result


async def run(server, agent_id: str, transport: str, plan: list) -> list[dict]:
    results = []
    for start in range(0, len(plan), UTTERANCES_PER_CALL):
        async with TRANSPORTS[transport](server, agent_id) as caller:
            await caller.first_speech_after(0, 30)  # the greeting
            for utterance, speed in plan[start : start + UTTERANCES_PER_CALL]:
                result = await one_utterance(server, caller, utterance, speed)
                results.append(result)
                print(
                    f"  {transport:<9} {speed:.2f} "
                    f"{fmt(result.get('turn_detection_secs')):>8} "
                    f"{'CUT OFF ' if result.get('cut_off') else ''}{utterance.text}",
                    flush=True,
                )
    return results


def summarize(results: list[dict]) -> dict:
    complete = [r for r in results if r["complete"]]
    decisions = [r["turn_detection_secs"] for r in complete if "turn_detection_secs" in r]
    heard = [r["voice_to_voice_secs"] for r in complete if r.get("answered")]
    unfinished = [r for r in results if not r["complete"]]
    return {
        "complete": len(complete),
        "complete_unanswered": sum(not r.get("answered") for r in complete),
        "turn_detection_p50_secs": percentile(decisions, 50),
        "turn_detection_p90_secs": percentile(decisions, 90),
        "turn_detection_max_secs": max(decisions, default=None),
        "waited_over_1s_share": (
            sum(d > 1.0 for d in decisions) / len(decisions) if decisions else None
        ),
        "voice_to_voice_p50_secs": percentile(heard, 50),
        "voice_to_voice_p95_secs": percentile(heard, 95),
        "unfinished": len(unfinished),
        "cut_off_share": (
            sum(bool(r.get("cut_off")) for r in unfinished) / len(unfinished)
            if unfinished
            else None
        ),
    }


def print_table(rows: list[tuple[str, str, dict]]) -> None:
    print(f"\nmachine: {machine()}")
    header = (
        f"{'pipeline':<9} {'transport':<10} {'n':>4} {'turn p50':>9} {'p90':>8} {'max':>8} "
        f"{'>1 s':>6} {'v2v p50':>8} {'v2v p95':>8} {'unfin.':>6} {'cut off':>8}"
    )
    print(header)
    for pipeline, transport, s in rows:
        over = s["waited_over_1s_share"]
        cut = s["cut_off_share"]
        print(
            f"{pipeline:<9} {transport:<10} {s['complete']:>4} "
            f"{fmt(s['turn_detection_p50_secs']):>9} {fmt(s['turn_detection_p90_secs']):>8} "
            f"{fmt(s['turn_detection_max_secs']):>8} "
            f"{'—' if over is None else f'{over:.0%}':>6} "
            f"{fmt(s['voice_to_voice_p50_secs']):>8} {fmt(s['voice_to_voice_p95_secs']):>8} "
            f"{s['unfinished']:>6} {'—' if cut is None else f'{cut:.0%}':>8}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pipeline", action="append", choices=["instant", "local"], help="repeatable"
    )
    parser.add_argument("--transport", action="append", choices=list(TRANSPORTS), help="repeatable")
    parser.add_argument(
        "--sample", type=int, help="play this many utterances (seeded draw), not the whole corpus"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--endpointing", choices=["fast", "balanced", "patient"])
    parser.add_argument(
        "--pipelines-path",
        type=Path,
        help="another directory of pipeline configs, overriding same-named ones (e.g. a local.yaml "
        "whose llama.cpp server uses a port another server already holds)",
    )
    args = parser.parse_args()
    pipelines = args.pipeline or ["instant", "local"]
    transports = args.transport or list(TRANSPORTS)

    corpus = turns_corpus.utterances()
    plan = [(u, turns_corpus.SPEEDS[i % len(turns_corpus.SPEEDS)]) for i, u in enumerate(corpus)]
    if args.sample:
        plan = random.Random(args.seed).sample(plan, min(args.sample, len(plan)))

    llm = ScriptedLLM(default_reply=REPLY).start()
    data = Path(tempfile.mkdtemp(prefix="switchboard-turns-"))
    server = start_server(
        data,
        preload=pipelines,
        env={
            "SWITCHBOARD_PIPELINES_PATH": json.dumps(
                [str(BENCH_PIPELINES)] + ([str(args.pipelines_path)] if args.pipelines_path else [])
            ),
            "SCRIPTED_LLM_URL": llm.url,
        },
    )
    rows, report = [], {"machine": machine(), "started": time.time(), "runs": []}
    try:
        for pipeline in pipelines:
            agent = (
                server.client()
                .post(
                    "/v1/agents",
                    json={
                        "name": "Turns benchmark",
                        "voice_id": "tone" if pipeline == "instant" else "joe",
                        "pipeline": pipeline,
                        "greeting": "Hello.",
                        "system_prompt": "You are a restaurant's receptionist.",
                        **({"endpointing": args.endpointing} if args.endpointing else {}),
                    },
                )
                .json()
            )
            for transport in transports:
                print(f"{pipeline} over {transport}: {len(plan)} utterances")
                results = await run(server, agent["id"], transport, plan)
                summary = summarize(results)
                rows.append((pipeline, transport, summary))
                report["runs"].append(
                    {
                        "pipeline": pipeline,
                        "transport": transport,
                        "summary": summary,
                        "utterances": results,
                    }
                )
    finally:
        server.stop()
        llm.stop()
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"turns-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    asyncio.run(main())
