"""Does a server that has carried many calls hold on to memory, files or tasks?

One server worker (`switchboard serve`) on the `instant` pipeline (canned STT/TTS, scripted
LLM; real VAD and turn detection). Each round, `--calls` Twilio callers dial in at once and
talk for `--secs`; once every call of the round has ended the server's resident memory, open
file descriptors and threads (from /proc) and its asyncio tasks (`switchboard_asyncio_tasks`
on /metrics) are recorded. RSS that climbs for a few rounds and then stays flat is warm-up
(allocator arenas, caches, lazily loaded code); RSS that keeps climbing round after round is a
leak. The verdict compares the growth over the second half of the rounds with the first.

    .venv/bin/python -m benchmarks.soak --rounds 20 --calls 5 --secs 20

The table is also written as JSON to `benchmarks/results/<date>-<machine>-soak.json`.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.capacity import RESULTS, caller
from benchmarks.common import BENCH_PIPELINES, machine, twilio_session
from tests.audio import speech
from tests.fakes.scripted_llm import ScriptedLLM
from tests.helpers.servers import start_server


def process_counts(pid: int) -> dict:
    """Resident memory (MiB), open file descriptors and threads of one process."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        "rss_mib": int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)),
    }


def asyncio_tasks(server) -> int:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return int(float(re.search(r"^switchboard_asyncio_tasks(?:\{[^}]*\})? (\S+)$", text, re.M)[1]))


async def wait_until_idle(server) -> None:
    """Until the worker runs no call (each call's end is written just after its socket closes)."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        while (await http.get("/health")).json()["live_calls"]:
            if time.monotonic() > deadline:
                raise TimeoutError("calls still live a minute after their callers hung up")
            await asyncio.sleep(0.5)
    await asyncio.sleep(2)  # post-call work (recording, summary jobs) settles


def show(row: dict) -> None:
    print(
        f"{row['round']:>5} {row['calls']:>6} {row['failed']:>6} {row['rss_mib']:>5.0f} MiB "
        f"{row['fds']:>5} {row['threads']:>7} {row['tasks']:>5}",
        flush=True,
    )


def mib_per_round(rows: list[dict]) -> float:
    """Least-squares slope of RSS over these rounds."""
    if len(rows) < 2:
        return 0.0
    xs = [r["round"] for r in rows]
    ys = [r["rss_mib"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=5, help="simultaneous calls per round")
    parser.add_argument("--secs", type=float, default=20, help="how long each caller talks")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args()
    json_path = args.json or RESULTS / (
        f"{datetime.date.today().isoformat()}-{platform.node() or 'machine'}-soak.json"
    )

    llm = ScriptedLLM(default_reply="We open at eight tomorrow morning.").start()
    server = start_server(
        Path(tempfile.mkdtemp(prefix="switchboard-soak-")),
        preload=["instant"],
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
    rows = []
    try:
        created = await asyncio.to_thread(
            httpx.post,
            f"{server.url}/v1/agents",
            headers=server.headers,
            json={
                "name": "Soak",
                "voice_id": "tone",
                "pipeline": "instant",
                "greeting": "Hello, thanks for calling.",
                "system_prompt": "You are a receptionist.",
            },
        )
        agent = created.json()
        print(
            f"\nSoak — pipeline 'instant', one worker, {args.calls} calls × {args.secs:.0f} s a round"
        )
        print(f"machine: {machine()}")
        start = {"round": 0, "calls": 0, "failed": 0, **process_counts(server.process.pid)}
        start["tasks"] = asyncio_tasks(server)
        rows.append(start)
        print(
            f"{'round':>5} {'calls':>6} {'failed':>6} {'rss':>9} {'fds':>5} {'threads':>7} {'tasks':>5}"
        )
        show(start)
        total = failed = 0
        for number in range(1, args.rounds + 1):
            twimls = [twilio_session(server, agent["id"])[0] for _ in range(args.calls)]
            results = await asyncio.gather(
                *(caller(twiml, args.secs, question) for twiml in twimls), return_exceptions=True
            )
            total += args.calls
            failed += sum(1 for r in results if not isinstance(r, dict) or not r["turns"])
            await wait_until_idle(server)
            row = {"round": number, "calls": total, "failed": failed}
            row |= process_counts(server.process.pid)
            row["tasks"] = asyncio_tasks(server)
            rows.append(row)
            show(row)
    finally:
        server.stop()
        llm.stop()
    half = len(rows) // 2
    early, late = mib_per_round(rows[: half + 1]), mib_per_round(rows[half:])
    per_hundred_calls = late / args.calls * 100
    print(
        f"RSS growth: {early:.1f} MiB/round over rounds 0–{half}, {late:.1f} MiB/round after "
        f"({per_hundred_calls:.1f} MiB per 100 calls)"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(
        json.dumps(
            {
                "benchmark": "soak",
                "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": machine(),
                "calls_per_round": args.calls,
                "secs": args.secs,
                "rss_mib_per_round_first_half": early,
                "rss_mib_per_round_second_half": late,
                "rss_mib_per_100_calls_after_warm_up": per_hundred_calls,
                "rounds": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {json_path}")


if __name__ == "__main__":
    asyncio.run(main())
