"""The llama.cpp OpenAI-compatible server a `local_server` LLM stage asks for.

`switchboard serve` starts one per machine before the web workers, so every worker
shares the one loaded model and the `local` config's `OpenAILLMService` reaches it by
`base_url` — the same code path that serves Ollama or vLLM. It is llama.cpp's own
`llama-server` (`deploy/build-llama-server`): its parallel slots generate the replies of
several calls at once, each slot keeping its call's conversation in its KV cache.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

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
        llama_server(),
        "--model",
        str(model),
        "--alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(config.port),
        "--parallel",
        str(config.parallel),
        "--ctx-size",
        str(config.n_ctx * config.parallel),  # shared out among the slots
        "--threads",
        str(config.n_threads or os.cpu_count() or 1),
        "--no-webui",
        "--no-slots",  # /slots would show any local process the calls' prompts
    ]
    logger.info(f"Starting local LLM server ({model.name}) on port {config.port}")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_prepare_child
    )
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if is_serving(config.port):
            return process if process.poll() is None else None
        if process.poll() is not None and not _listening(config.port):
            raise RuntimeError(f"local LLM server exited with code {process.returncode}")
        # Exited with the port taken: another `switchboard serve` on this machine started its
        # server first (both found none); that one is still loading its model.
        time.sleep(0.2)
    stop(process)
    raise TimeoutError(f"local LLM server did not answer within {timeout_secs:.0f}s")


class KeptServer:
    """The machine's local LLM server, kept answering while a `serve` runs: started unless one
    already answers on its port, and started again once that port closes (the server crashed,
    or the other `serve` on this machine, whose server this one shared, has exited)."""

    def __init__(self, config: LocalLLMServerConfig, alias: str, check_secs: float = 2.0):
        self._config = config
        self._alias = alias
        self._check_secs = check_secs
        self._process = start(config, alias)
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="local-llm-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self._check_secs):
            if _listening(self._config.port):
                continue
            logger.warning(f"Local LLM server on port {self._config.port} is gone; starting it")
            stop(self._process)
            try:
                self._process = start(self._config, self._alias)
            except Exception:
                logger.exception("Local LLM server could not be started again")

    def stop(self) -> None:
        self._stopping.set()
        self._watcher.join(timeout=5)
        stop(self._process)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def llama_server() -> str:
    """The `llama-server` binary: beside this Python, where `./run` installs it, or on PATH."""
    beside = Path(sys.executable).parent / "llama-server"
    found = str(beside) if beside.exists() else shutil.which("llama-server")
    if not found:
        raise FileNotFoundError("llama-server not found: deploy/build-llama-server builds it")
    return found


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
