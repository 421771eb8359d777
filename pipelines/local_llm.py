"""The llama.cpp OpenAI-compatible server a `local_server` LLM stage asks for.

`switchboard serve` starts one per machine before the web workers, so every worker
shares the one loaded model and the `local` config's `OpenAILLMService` reaches it by
`base_url` — the same code path that serves Ollama or vLLM.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request

from loguru import logger

from pipelines import models
from pipelines.config import LocalLLMServerConfig, resolve_path

PR_SET_PDEATHSIG = 1


def is_serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start(
    config: LocalLLMServerConfig, alias: str, timeout_secs: float = 120
) -> subprocess.Popen | None:
    """Start the server unless one already answers on its port; wait until it is ready."""
    if is_serving(config.port):
        logger.info(f"Local LLM server already running on port {config.port}")
        return None
    model = resolve_path(config.model)
    if not model.exists():
        raise FileNotFoundError(f"local LLM model not found: {model}")
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(config.port),
        "--n_ctx",
        str(config.n_ctx),
        "--n_threads",
        str(config.n_threads or os.cpu_count() or 1),
        # By default the server drops a streaming reply the moment another request arrives: with
        # two calls at once, one caller's answer stopped mid-sentence. Requests queue instead.
        "--interrupt_requests",
        "False",
    ]
    logger.info(f"Starting local LLM server ({model.name}) on port {config.port}")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_prepare_child
    )
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"local LLM server exited with code {process.returncode}")
        if is_serving(config.port):
            return process
        time.sleep(0.2)
    process.terminate()
    raise TimeoutError(f"local LLM server did not answer within {timeout_secs:.0f}s")


def _prepare_child() -> None:
    """In the child: have Linux send it SIGTERM when the server that started it dies, however it
    dies; and run it at a lower priority. The LLM gets every core while it is the only one working
    (its first sentence), and yields them to speech synthesis, which the caller is waiting for,
    while it generates the rest of the reply."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.nice(models.BACKGROUND_NICENESS)


def stop(process: subprocess.Popen | None) -> None:
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
