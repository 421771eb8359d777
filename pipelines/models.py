"""Process-wide model loading: each model is loaded once and shared by every call.

Per-call state (VAD recurrent state, turn-analyzer buffers, LLM context) stays per
call; only the read-only weights and inference sessions are shared. ONNX Runtime and
CTranslate2 sessions are safe to run from several threads at once.
"""

import functools
import importlib.resources
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
from faster_whisper import WhisperModel
from loguru import logger

BACKGROUND_NICENESS = 10
"""The niceness of work that can wait for the event loops and speech synthesis: turn prediction, the local LLM server."""
_lock = threading.Lock()
_cache: dict[tuple, object] = {}


def _load_once(key: tuple, loader):
    with _lock:
        if key not in _cache:
            logger.info(f"Loading {key[0]} model {key[1:]}")
            _cache[key] = loader()
        return _cache[key]


class ShortWindowWhisperModel(WhisperModel):
    """faster-whisper that encodes a short segment in a window sized to it, not in 30 s.

    faster-whisper zero-pads every segment's features to Whisper's 30 s window, and the
    encoder's time grows with the window: tiny.en on 2 CPU cores takes ~220 ms for 30 s
    and ~27 ms for 10 s. A caller's turn lasts a few seconds, so the encoder gets the
    speech and `PADDING_FRAMES` of the padding after it. The padding matters: with the
    window ending right after the speech, the decoder doesn't see the speech end and
    repeats itself. `benchmarks/whisper_window.py` compares words and times.
    """

    PADDING_FRAMES = 1000  # 10 s of 10 ms feature frames

    def encode(self, features: np.ndarray):
        frames = np.flatnonzero(np.any(features != 0, axis=tuple(range(features.ndim - 1))))
        window = (int(frames[-1]) + 1 if len(frames) else 0) + self.PADDING_FRAMES
        if window < features.shape[-1]:
            features = np.ascontiguousarray(features[..., : window + window % 2])
        return super().encode(features)


def whisper_model(
    model_dir: Path, device: str = "cpu", compute_type: str = "int8"
) -> ShortWindowWhisperModel:
    """A faster-whisper model from a local CTranslate2 directory (never the hub)."""
    if not (Path(model_dir) / "tokenizer.json").exists():
        raise FileNotFoundError(f"no Whisper model (tokenizer.json) in {model_dir}")

    def load():
        return ShortWindowWhisperModel(
            str(model_dir), device=device, compute_type=compute_type, local_files_only=True
        )

    return _load_once(("whisper", str(model_dir), device, compute_type), load)


def piper_voice(model_dir: Path, voice: str):
    """A Piper voice from `<model_dir>/<voice>.onnx` and its `.onnx.json`."""
    model_path = Path(model_dir) / f"{voice}.onnx"
    if not model_path.exists() or not model_path.with_suffix(".onnx.json").exists():
        raise FileNotFoundError(f"no Piper voice {voice} in {model_dir}")

    def load():
        from piper import PiperVoice

        return PiperVoice.load(model_path)

    return _load_once(("piper", str(model_path)), load)


@functools.cache
def background_executor() -> ThreadPoolExecutor:
    """The process's threads for model work a call can wait a little for (turn prediction), one
    per core, at a lower CPU priority than the event loop, which paces every call's audio: on a
    busy server a turn decision is a few ms later instead of other calls' audio stuttering."""
    return ThreadPoolExecutor(
        max_workers=os.cpu_count() or 1,
        thread_name_prefix="background-model",
        initializer=_lower_thread_priority,
    )


def _lower_thread_priority() -> None:
    if hasattr(os, "setpriority"):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


def _bundled(package: str, name: str) -> str:
    return str(importlib.resources.files(package).joinpath(name))


def silero_session() -> onnxruntime.InferenceSession:
    """The Silero VAD ONNX session bundled with pipecat-ai."""

    def load():
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        return onnxruntime.InferenceSession(
            _bundled("pipecat.audio.vad.data", "silero_vad.onnx"),
            providers=["CPUExecutionProvider"],
            sess_options=opts,
        )

    return _load_once(("silero",), load)


def smart_turn_session() -> onnxruntime.InferenceSession:
    """The Smart Turn v3 ONNX session bundled with pipecat-ai."""

    def load():
        opts = onnxruntime.SessionOptions()
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        return onnxruntime.InferenceSession(
            _bundled("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx"),
            sess_options=opts,
        )

    return _load_once(("smart_turn_v3",), load)
