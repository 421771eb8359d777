"""How many simultaneous Twilio calls one machine carries, on services that answer at once.

The server runs as the README tells users to run it in production (`switchboard serve
--workers N`, one worker per core) on the `instant` pipeline (canned STT/TTS, scripted
LLM; real VAD and turn detection), or with `--pipeline local` on the offline models (one
llama.cpp server for the machine; voice-to-voice target 2 s instead of 1.5). For each step, N
callers dial in; each talks and listens at real time for `--secs`. With `--arrivals together`
(the default) they all dial at the same moment and, saying the same question to the same reply,
keep speaking and falling quiet in step: every call's turn ends within a few ms of the others',
the worst case for turn detection. With `--arrivals spread` each dials after a random delay within
one turn's cycle (`SPREAD_SECS`), as independent callers would; its CPU figures are averaged
over the step, ramp included.

Reported per step: outbound media pacing (p50/p99 gap between consecutive agent media
frames within an utterance), voice-to-voice p50/p95, server CPU (of the machine, per
call, and each worker's share of the workers' CPU: how evenly calls spread) and resident
memory (all processes, per call), and failed calls. A step holds if no call failed, the
p99 gap ≤ 60 ms and voice-to-voice p95 within target; the answer is the largest step that holds.
The table is also written as JSON to `benchmarks/results/<date>-<machine>.json` (`--json`
to choose the path).

The server's own load shedding is off (`SWITCHBOARD_MAX_CALLS_PER_WORKER=0`,
`SWITCHBOARD_LOAD_THRESHOLD=1`), so the steps measure what the machine carries.

The callers run in `--client-processes` processes (one per core by default), so one
Python process's event loop doesn't delay the arrivals it timestamps. They share the
machine's cores with the server; their CPU is reported too.

    .venv/bin/python -m benchmarks.capacity --steps 10 25 50 100 --workers 2
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import random
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx

from benchmarks.common import (
    BENCH_PIPELINES,
    cpu_seconds_and_rss,
    fmt,
    machine,
    percentile,
    process_tree,
    server_turns,
    twilio_session,
    worker_pids,
)
from benchmarks.latency import agent_quiet, first_agent_speech_after, speech_frames
from tests.audio import speech
from tests.fakes.scripted_llm import ScriptedLLM
from tests.fakes.twilio_client import TwilioMediaStreamsClient
from tests.helpers.servers import start_server

GAP_TARGET = 0.060
V2V_P95_TARGET = {"instant": 1.5, "local": 2.0}
"""Voice-to-voice p95 a step must keep, per pipeline (the issue's targets)."""
VOICES = {"instant": "tone", "local": "joe"}
RESULTS = Path(__file__).parent / "results"
UTTERANCE_BREAK = 0.5  # a longer gap between agent frames is a pause between utterances
SPREAD_SECS = 4.0
"""About one turn's cycle (the question, the reply, the pauses): `--arrivals spread` starts
each caller at a random point within it."""


async def caller(twiml: str, secs: float, question: bytes, delay: float) -> dict:
    await asyncio.sleep(delay)
    client = TwilioMediaStreamsClient.from_twiml(twiml)
    turns: list[float] = []
    async with client:
        opened = time.monotonic()
        await first_agent_speech_after(client, opened, 30)
        await agent_quiet(client, quiet_secs=0.5)
        while time.monotonic() - opened < secs:
            started = time.monotonic()
            await client.send_audio(question)
            last_speech_at = started + speech_frames(question)[-1] * 0.02
            silence = asyncio.create_task(client.send_silence(30))
            turns.append(
                await first_agent_speech_after(client, last_speech_at, 30) - last_speech_at
            )
            await agent_quiet(client, quiet_secs=0.5)
            silence.cancel()
        await client.stop()
    arrivals = [at for at, _ in client.media_log]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a < UTTERANCE_BREAK]
    return {"turns": turns, "gaps": gaps, "frames": len(arrivals)}


def run_callers(
    twimls: list[str], secs: float, question: bytes, delays: list[float]
) -> tuple[list[dict | str], float]:
    """One load-generator process: these callers (each after its delay) on its event loop;
    their results (or errors) and the CPU seconds the process spent."""

    async def all_callers():
        return await asyncio.gather(
            *(caller(t, secs, question, d) for t, d in zip(twimls, delays, strict=True)),
            return_exceptions=True,
        )

    cpu_before = time.process_time()
    results = asyncio.run(all_callers())
    errors_or_results = [
        r if isinstance(r, dict) else f"{type(r).__name__}: {r}"[:120] for r in results
    ]
    return errors_or_results, time.process_time() - cpu_before


async def step(
    server,
    agent_id: str,
    calls: int,
    secs: float,
    question: bytes,
    pool: ProcessPoolExecutor,
    processes: int,
    spread: bool,
) -> dict:
    sessions = [twilio_session(server, agent_id) for _ in range(calls)]
    twimls = [twiml for twiml, _ in sessions]
    rng = random.Random(calls)
    delays = [rng.uniform(0, SPREAD_SECS) if spread else 0.0 for _ in range(calls)]
    pids = process_tree(server.process.pid)
    workers = worker_pids(server.process.pid) or [server.process.pid]
    workers_before = [cpu_seconds_and_rss([pid])[0] for pid in workers]
    cpu_before, rss_idle = cpu_seconds_and_rss(pids)
    started = time.monotonic()
    peak_rss = 0.0

    async def sample_memory():
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, cpu_seconds_and_rss(pids)[1])
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample_memory())
    spread_over_workers = asyncio.create_task(calls_per_worker(server, secs / 2))
    loop = asyncio.get_running_loop()
    shares = await asyncio.gather(
        *(
            loop.run_in_executor(
                pool, run_callers, twimls[i::processes], secs, question, delays[i::processes]
            )
            for i in range(processes)
        )
    )
    sampler.cancel()
    worker_calls = await spread_over_workers
    elapsed = time.monotonic() - started
    cpu_after, _ = cpu_seconds_and_rss(pids)
    worker_cpu = [
        cpu_seconds_and_rss([pid])[0] - b for pid, b in zip(workers, workers_before, strict=True)
    ]
    results = [r for share, _ in shares for r in share]
    client_cpu = sum(cpu for _, cpu in shares)
    ok = [r for r in results if isinstance(r, dict) and r["turns"]]
    gaps = [g for r in ok for g in r["gaps"]]
    turns = [t for r in ok for t in r["turns"]]
    cpu_percent = 100 * (cpu_after - cpu_before) / elapsed / (os.cpu_count() or 1)
    result = {
        "calls": calls,
        "failures": calls - len(ok),
        "errors": sorted({r for r in results if isinstance(r, str)}),
        "gap_p50": percentile(gaps, 50),
        "gap_p99": percentile(gaps, 99),
        "v2v_p50": percentile(turns, 50),
        "v2v_p95": percentile(turns, 95),
        "v2v_ms": sorted(round(1000 * t) for t in turns),  # every turn, to pool runs
        "cpu_percent": cpu_percent,
        "cpu_percent_per_call": cpu_percent / calls,
        "worker_cpu_percent": [100 * cpu / elapsed for cpu in worker_cpu],
        "worker_calls": worker_calls,
        "rss_mib": peak_rss,
        "per_call_mib": max(0.0, peak_rss - rss_idle) / calls,
        "client_cpu_percent": 100 * client_cpu / elapsed / (os.cpu_count() or 1),
        "turn_parts": await turn_parts(server, [sid for _, sid in sessions]),
    }
    return result


async def turn_parts(server, session_ids: list[str]) -> dict[str, dict[str, float | None]]:
    """Where a turn's time went, by the server's own breakdown of each turn's voice-to-voice
    (VAD wait, turn decision, transcription, LLM, first clause, speech synthesis): p50 and p95
    of each part over every turn of the step's calls."""
    await asyncio.sleep(0.5)  # the server stores a turn's latency after its first audio
    parts: dict[str, list[float]] = {}
    for session_id in session_ids:
        for turn in await server_turns(server, session_id):
            for key, secs in turn["parts"].items():
                parts.setdefault(key, []).append(secs)
    return {
        f"p{pct}": {key: percentile(values, pct) for key, values in sorted(parts.items())}
        for pct in (50, 95)
    }


async def calls_per_worker(server, after: float) -> list[int]:
    """Live calls of each worker `after` seconds into the step, busiest first: /health asked on
    new connections, each held open so the next goes to another worker, until every worker has
    answered (each answers for itself)."""
    await asyncio.sleep(after)
    seen: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as held:
        for _ in range(40):
            client = await held.enter_async_context(httpx.AsyncClient(timeout=10))
            health = (await client.get(f"{server.url}/health")).json()
            seen[health["node_id"]] = health["live_calls"]
    return sorted(seen.values(), reverse=True)


def holds(result: dict, v2v_p95_target: float) -> bool:
    """No call failed, p99 gap ≤ 60 ms and voice-to-voice p95 within the pipeline's target."""
    return (
        result["failures"] == 0
        and result["gap_p99"] is not None
        and result["gap_p99"] <= GAP_TARGET
        and result["v2v_p95"] is not None
        and result["v2v_p95"] <= v2v_p95_target
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument(
        "--pipeline",
        choices=sorted(VOICES),
        default="instant",
        help="instant: the server's own cost; local: the offline models (llama.cpp shared)",
    )
    parser.add_argument("--secs", type=float, default=30, help="how long each caller keeps talking")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--client-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--arrivals",
        choices=["together", "spread"],
        default="together",
        help="callers dial at once and speak in step (worst case), or at random within a turn",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the results (default benchmarks/results/<date>-<machine>.json)",
    )
    args = parser.parse_args()
    json_path = args.json or RESULTS / (
        f"{datetime.date.today().isoformat()}-{platform.node() or 'machine'}.json"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    llm = ScriptedLLM(default_reply="We open at eight tomorrow morning.").start()
    data = Path(tempfile.mkdtemp(prefix="switchboard-capacity-"))
    server = start_server(
        data,
        preload=[args.pipeline],
        workers=args.workers,
        env={
            "SWITCHBOARD_PIPELINES_PATH": f'["{BENCH_PIPELINES}"]',
            "SCRIPTED_LLM_URL": llm.url,
            "SWITCHBOARD_MAX_CONCURRENT_CALLS": "100000",
            "SWITCHBOARD_RATE_LIMIT_PER_MINUTE": "0",
            "SWITCHBOARD_MAX_CALLS_PER_WORKER": "0",
            "SWITCHBOARD_LOAD_THRESHOLD": "1",
        },
    )
    question = speech("What time do you open tomorrow?", sample_rate=8000, tail_secs=0.1)
    target = V2V_P95_TARGET[args.pipeline]
    try:
        agent = httpx.post(
            f"{server.url}/v1/agents",
            headers=server.headers,
            json={
                "name": "Capacity",
                "voice_id": VOICES[args.pipeline],
                "pipeline": args.pipeline,
                "greeting": "Hello, thanks for calling.",
                "system_prompt": "You are a receptionist.",
            },
        ).json()
        print(
            f"\nCapacity benchmark — pipeline '{args.pipeline}', {args.workers} server worker process(es), "
            f"{args.client_processes} caller process(es), {args.secs:.0f} s per step, "
            f"arrivals {args.arrivals}"
        )
        print(f"machine: {machine()}")
        print(
            f"{'calls':>5} {'fail':>4} {'gap p50':>8} {'gap p99':>8} {'v2v p50':>8} {'v2v p95':>8} "
            f"{'cpu':>6} {'cpu/call':>8} {'workers cpu':>13} {'calls/worker':>12} {'rss':>9} {'rss/call':>9} "
            f"{'callers cpu':>11} holds"
        )
        best = None
        steps = []
        load_at_start = os.getloadavg()
        pool = ProcessPoolExecutor(
            args.client_processes, mp_context=multiprocessing.get_context("spawn")
        )
        for calls in args.steps:
            r = await step(
                server,
                agent["id"],
                calls,
                args.secs,
                question,
                pool,
                args.client_processes,
                args.arrivals == "spread",
            )
            r["holds"] = holds(r, target)
            split = "/".join(f"{c:.0f}" for c in r["worker_cpu_percent"])
            print(
                f"{r['calls']:>5} {r['failures']:>4} {fmt(r['gap_p50']):>8} {fmt(r['gap_p99']):>8} "
                f"{fmt(r['v2v_p50']):>8} {fmt(r['v2v_p95']):>8} {r['cpu_percent']:>5.0f}% "
                f"{r['cpu_percent_per_call']:>7.1f}% {split + ' %':>13} "
                f"{'/'.join(map(str, r['worker_calls'])):>12} {r['rss_mib']:>5.0f} MiB "
                f"{r['per_call_mib']:>5.1f} MiB {r['client_cpu_percent']:>10.0f}% "
                f"{'yes' if r['holds'] else 'no'}"
            )
            for pct, parts in r["turn_parts"].items():
                listed = ", ".join(f"{key} {fmt(secs)}" for key, secs in parts.items())
                print(f"      {pct} of turn parts: {listed}")
            for error in r["errors"]:
                print(f"      {error}")
            steps.append(r)
            if r["holds"]:
                best = calls
            await asyncio.sleep(3)
        print(
            f"largest step that holds (no failures, p99 gap ≤ {GAP_TARGET * 1000:.0f} ms, "
            f"voice-to-voice p95 ≤ {target} s): {best if best else 'none'}"
        )
        pool.shutdown()
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(
                {
                    "benchmark": "capacity",
                    "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "machine": machine(),
                    "load_average_at_start": load_at_start,
                    "pipeline": args.pipeline,
                    "workers": args.workers,
                    "client_processes": args.client_processes,
                    "secs": args.secs,
                    "arrivals": args.arrivals,
                    "targets": {"gap_p99": GAP_TARGET, "v2v_p95": target},
                    "largest_step_that_holds": best,
                    "steps": steps,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"results: {json_path}")
    finally:
        server.stop()
        llm.stop()


if __name__ == "__main__":
    asyncio.run(main())
