"""What the benchmarks share: the machine, a server run as users run it, Twilio callers."""

import os
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from tests.fakes.scripted_llm import ScriptedLLM
from tests.fakes.twilio_client import TwilioMediaStreamsClient, ulaw_decode
from tests.helpers.servers import ROOT, ServerProcess, start_server

BENCH_PIPELINES = ROOT / "benchmarks" / "pipelines"


@contextmanager
def benchmark_server(
    pipeline: str, reply: str, system_prompt: str
) -> Iterator[tuple[ServerProcess, str]]:
    """A server preloading `pipeline` (`instant` from `benchmarks/pipelines/` included), the
    scripted LLM answering `reply`, and an agent on it: the server and the agent's id."""
    llm = ScriptedLLM(default_reply=reply).start()
    server = start_server(
        Path(tempfile.mkdtemp(prefix="switchboard-bench-")),
        preload=[pipeline],
        env={"SWITCHBOARD_PIPELINES_PATH": f'["{BENCH_PIPELINES}"]', "SCRIPTED_LLM_URL": llm.url},
    )
    try:
        agent = httpx.post(
            f"{server.url}/v1/agents",
            headers=server.headers,
            json={
                "name": "Benchmark",
                "voice_id": "tone" if pipeline == "instant" else "joe",
                "pipeline": pipeline,
                "greeting": "Hello, thanks for calling.",
                "system_prompt": system_prompt,
            },
        )
        agent.raise_for_status()
        yield server, agent.json()["id"]
    finally:
        server.stop()
        llm.stop()


SPEECH_RMS = 100  # 16-bit PCM RMS (about -50 dBFS) above which a 20 ms frame is audible speech


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Python {platform.python_version()}"


def is_speech(ulaw_frame: bytes) -> bool:
    pcm = np.frombuffer(ulaw_decode(ulaw_frame), dtype=np.int16).astype(np.float64)
    return len(pcm) > 0 and float(np.sqrt(np.mean(pcm**2))) > SPEECH_RMS


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def fmt(value: float | None, unit: str = "ms") -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if unit == "ms" else f"{value:.2f}"


async def server_turns(server, session_id: str) -> list[dict]:
    """The session's turns as the server measured them (`latency.turns`: voice-to-voice and
    its parts)."""
    async with httpx.AsyncClient(headers=server.headers) as http:
        session = (await http.get(f"{server.url}/v1/sessions/{session_id}")).json()
    return (session.get("latency") or {}).get("turns", [])


def twilio_session(server, agent_id: str) -> tuple[str, str]:
    """A fresh Twilio session of the agent: the TwiML the server answers, and the session's id."""
    response = httpx.post(
        f"{server.url}/v1/sessions/twilio",
        json={"agentId": agent_id, "from": "+15550001111", "to": "+15550002222"},
        headers={**server.headers, "Accept": "application/json"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["twiml"], response.json()["session"]["session_id"]


def twilio_caller(server, agent_id: str) -> TwilioMediaStreamsClient:
    """A Twilio caller for a fresh session of the agent; the session's id is on it as `session_id`."""
    twiml, session_id = twilio_session(server, agent_id)
    client = TwilioMediaStreamsClient.from_twiml(twiml)
    client.session_id = session_id
    return client


def process_tree(pid: int) -> list[int]:
    """The server process and all its descendants (workers, the local LLM server)."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    children = [int(p) for p in out.split()]
    return [pid] + [d for c in children for d in process_tree(c)]


def worker_pids(pid: int) -> list[int]:
    """The server's uvicorn worker processes (children started by multiprocessing's spawn)."""
    return [
        child
        for child in process_tree(pid)[1:]
        if "spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
    ]


def cpu_seconds_and_rss(pids: list[int]) -> tuple[float, float]:
    """Total CPU seconds used and resident memory (MiB) of these processes."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = rss = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
        except (OSError, IndexError):
            continue
    return cpu, rss
