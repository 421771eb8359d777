"""What a config can name: services and processors, built in or added by installed packages.

A package adds a service or a processor through an entry point in the group
`switchboard.services` (a factory `(StageConfig, ServiceContext) -> Pipecat service`, as in
`pipelines/services.py`) or `switchboard.processors` (a `ProcessorType`); the entry point's
name is what configs write. See `examples/switchboard-shout`.

A processor type's `build` returns what the call runs, by kind: a `FrameProcessor` (put at
its point of the pipeline), a `BaseAudioFilter` (the input transport's filter on the
caller's audio), a `BaseAudioMixer` (the output transport's mixer), `BaseUserMuteStrategy`s
(the user aggregator's) or a `TranscriptRedactor` (rewrites what the call stores).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal, get_args

from loguru import logger
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.audio.mixers.base_audio_mixer import BaseAudioMixer
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.turns.user_mute import (
    AlwaysUserMuteStrategy,
    BaseUserMuteStrategy,
    FirstSpeechUserMuteStrategy,
    FunctionCallUserMuteStrategy,
    MuteUntilFirstBotCompleteUserMuteStrategy,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines import services
from pipelines.config import PipelineConfig, Point, resolve_path, validation_problems
from processors.pii import ENTITIES, PIIRedactor, TranscriptRedactor
from processors.thinking_filler import ThinkingFiller

PROCESSOR_GROUP = "switchboard.processors"
SERVICE_GROUP = "switchboard.services"
POINTS: tuple[Point, ...] = get_args(Point)
_SECRET = re.compile("key|secret|token|password", re.IGNORECASE)


class Options(BaseModel):
    """Base of a processor's options: an option it doesn't know is an error."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


@dataclass(frozen=True)
class ProcessorType:
    """A processor a config can name: its options, the points it may run at, how to build it."""

    build: Callable[[Any], object]
    """Options (an instance of `options`) → one call's part (see the module docstring), or a list."""
    options: type[BaseModel] = Options
    points: tuple[Point, ...] = POINTS
    summary: str = ""


@dataclass
class CallProcessors:
    """One call's parts built from its config's `processors:`, by where they attach."""

    frame_processors: dict[Point, list[FrameProcessor]] = field(default_factory=dict)
    audio_in_filter: BaseAudioFilter | None = None
    audio_out_mixer: BaseAudioMixer | None = None
    user_mute_strategies: list[BaseUserMuteStrategy] = field(default_factory=list)
    redactors: list[TranscriptRedactor] = field(default_factory=list)

    def at(self, point: Point) -> list[FrameProcessor]:
        """The frame processors that go in at `point`, in config order."""
        return self.frame_processors.get(point, [])

    def transport_params(self) -> dict[str, Any]:
        """The transport params these parts set (`audio_in_filter`, `audio_out_mixer`)."""
        return {"audio_in_filter": self.audio_in_filter, "audio_out_mixer": self.audio_out_mixer}

    def redact(self, text: str) -> str:
        for redactor in self.redactors:
            text = redactor.redact(text)
        return text

    def add(self, point: Point, part: object) -> str | None:
        """File `part` under what it attaches to; a problem if it can't be."""
        if isinstance(part, FrameProcessor):
            self.frame_processors.setdefault(point, []).append(part)
        elif isinstance(part, BaseAudioFilter):
            if self.audio_in_filter:
                return "only one processor may filter the caller's audio"
            self.audio_in_filter = part
        elif isinstance(part, BaseAudioMixer):
            if self.audio_out_mixer:
                return "only one processor may mix into the agent's audio"
            self.audio_out_mixer = part
        elif isinstance(part, BaseUserMuteStrategy):
            self.user_mute_strategies.append(part)
        elif isinstance(part, TranscriptRedactor):
            self.redactors.append(part)
        else:
            return f"built a {type(part).__name__}, which is no kind of processor Switchboard runs"
        return None


# --- Built-in processors ---


class STTMuteOptions(Options):
    strategies: list[
        Literal["first_speech", "until_first_bot_complete", "function_call", "always"]
    ] = Field(default=["first_speech", "function_call"], min_length=1)
    """When the caller's speech opens no turn: during the agent's first speech (`first_speech`),
    until it has finished (`until_first_bot_complete`: from the start of the call), while a
    tool runs (`function_call`), whenever the agent speaks (`always`)."""


MUTE_STRATEGIES: dict[str, Callable[[], BaseUserMuteStrategy]] = {
    "first_speech": FirstSpeechUserMuteStrategy,
    "until_first_bot_complete": MuteUntilFirstBotCompleteUserMuteStrategy,
    "function_call": FunctionCallUserMuteStrategy,
    "always": AlwaysUserMuteStrategy,
}


class ThinkingFillerOptions(Options):
    after_ms: int = Field(default=1500, ge=100)
    """How long the reply's first words may take before the filler is said."""
    text: str = Field(default="One moment…", min_length=1)


class PIIRedactorOptions(Options):
    entities: list[Literal[ENTITIES]] = Field(default_factory=lambda: list(ENTITIES), min_length=1)  # type: ignore[valid-type]
    region: str = Field(default="US", pattern="^[A-Z]{2}$")
    """The country whose numbering plan reads phone numbers said without a country code."""


class BackgroundAudioOptions(Options):
    volume: float = Field(default=0.3, ge=0, le=1)
    file: str | None = None
    """A sound file to loop (any rate; mono or mixed down), `pkg://` or a path; the
    generated room tone when unset."""

    @field_validator("file")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not resolve_path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value


def _noise_filter(options: Options) -> BaseAudioFilter:
    import pyrnnoise  # noqa: F401  # without it RNNoiseFilter passes the audio through unfiltered
    from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

    return RNNoiseFilter()


def _background_audio(options: BackgroundAudioOptions) -> BaseAudioMixer:
    from processors.background_audio import BackgroundAudioMixer

    return BackgroundAudioMixer(
        resolve_path(options.file) if options.file else None, options.volume
    )


BUILTIN_PROCESSORS: dict[str, ProcessorType] = {
    "stt_mute": ProcessorType(
        build=lambda o: [MUTE_STRATEGIES[name]() for name in o.strategies],
        options=STTMuteOptions,
        points=("after_stt",),
        summary="caller speech opens no turn while muted (Pipecat's user mute strategies)",
    ),
    "thinking_filler": ProcessorType(
        build=lambda o: ThinkingFiller(o.after_ms / 1000, o.text),
        options=ThinkingFillerOptions,
        points=("after_llm", "before_tts"),
        summary="says a short filler once when the reply's first words are slow to come",
    ),
    "pii_redactor": ProcessorType(
        build=lambda o: PIIRedactor(o.entities, o.region),
        options=PIIRedactorOptions,
        points=("after_stt", "after_llm"),
        summary="redacts personal data from what is stored; the live LLM sees the real text",
    ),
    "noise_filter": ProcessorType(
        build=_noise_filter,
        points=("after_input", "before_stt"),
        summary="RNNoise on the caller's audio (the input transport's filter)",
    ),
    "background_audio": ProcessorType(
        build=_background_audio,
        options=BackgroundAudioOptions,
        points=("before_output",),
        summary="ambience looped under the agent's audio (the output transport's mixer)",
    ),
}


# --- Lookup ---


class PluginLoadError(Exception):
    """An installed package's entry point that fails to import: configs naming it don't load."""


@cache
def installed(group: str) -> dict[str, Any]:
    """The objects installed packages register under an entry-point group, by name (a
    `PluginLoadError` for one that fails to import)."""
    found: dict[str, Any] = {}
    for point in entry_points(group=group):
        try:
            found[point.name] = point.load()
        except Exception as exc:
            logger.error(f"entry point {group}:{point.name} ({point.value}) does not load: {exc}")
            found[point.name] = PluginLoadError(f"{point.value} does not load: {exc}")
    return found


def processor_types() -> dict[str, ProcessorType | PluginLoadError]:
    return {**installed(PROCESSOR_GROUP), **BUILTIN_PROCESSORS}


def service_factories() -> dict[str, Callable | PluginLoadError]:
    return {**installed(SERVICE_GROUP), **services.FACTORIES}


class ProcessorConfigError(ValueError):
    """A config's processors that can't be built, each problem naming its key."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def check(config: PipelineConfig) -> list[str]:
    """What in `config` names no registered service or processor, gives a service an option
    it doesn't take, puts a processor at a point it can't run at, or gives it options it
    refuses (one trial build per processor)."""
    problems = []
    factories = service_factories()
    for key in ("vad", "turn", "stt", "llm", "tts", "realtime", "analysis"):
        stage = getattr(config, key)
        if not stage:
            continue
        factory = factories.get(stage.service)
        if factory is None:
            problems.append(
                f"{key}.service: unknown service '{stage.service}' (known: {', '.join(sorted(factories))})"
            )
        elif isinstance(factory, PluginLoadError):
            problems.append(f"{key}.service: '{stage.service}': {factory}")
        else:
            problems.extend(services.option_problems(key, stage, factory))
    try:
        build_processors(config)
    except ProcessorConfigError as exc:
        problems.extend(exc.problems)
    return problems


def build_processors(config: PipelineConfig) -> CallProcessors:
    """One call's instances of the config's processors."""
    types = processor_types()
    parts = CallProcessors()
    problems = []
    for point, entries in config.processors.items():
        for index, entry in enumerate(entries):
            where = f"processors.{point}.{index}"
            kind = types.get(entry.name)
            if kind is None:
                problems.append(
                    f"{where}.name: unknown processor '{entry.name}' (known: {', '.join(sorted(types))})"
                )
                continue
            if not isinstance(kind, ProcessorType):
                problems.append(f"{where}.name: '{entry.name}': {kind}")
                continue
            if point not in kind.points:
                problems.append(
                    f"{where}: '{entry.name}' can't run at {point} (it runs at {', '.join(kind.points)})"
                )
                continue
            try:
                options = kind.options.model_validate(entry.options)
            except ValidationError as exc:
                problems.extend(validation_problems(exc, prefix=f"{where}.options."))
                continue
            try:
                built = kind.build(options)
            except Exception as exc:
                problems.append(f"{where}: '{entry.name}' could not be built: {exc}")
                continue
            for part in built if isinstance(built, list) else [built]:
                if problem := parts.add(point, part):
                    problems.append(f"{where}: {problem}")
    if problems:
        raise ProcessorConfigError(problems)
    return parts


def describe(config: PipelineConfig) -> list[str]:
    """What the config builds, stage by stage, in pipeline order (for `pipelines check`)."""
    types = processor_types()
    at = {point: config.processors.get(point, []) for point in POINTS}

    def processors(point: Point) -> list[str]:
        lines = []
        for entry in at[point]:
            kind = types[entry.name]
            assert isinstance(kind, ProcessorType)  # the config loaded
            options = kind.options.model_validate(entry.options).model_dump()
            lines.append(f"  {point}: {entry.name} {options} — {kind.summary}")
        return lines

    def stage(key: str) -> list[str]:
        value = getattr(config, key)
        if not value:
            return []
        options = {k: "***" if _SECRET.search(k) else v for k, v in value.options.items()}
        return [f"  {key}: {value.service} {options}"]

    return [
        f"pipeline '{config.name}'" + (f": {config.description}" if config.description else ""),
        "  input: transport in",
        *processors("after_input"),
        *processors("before_stt"),
        *stage("stt"),
        *processors("after_stt"),
        *stage("vad"),
        *stage("turn"),
        *processors("before_llm"),
        *stage("llm"),
        *processors("after_llm"),
        *processors("before_tts"),
        *stage("tts"),
        *stage("realtime"),
        f"  voices: {', '.join(f'{k} → {v}' for k, v in config.voices.items())}",
        *processors("before_output"),
        "  output: transport out",
        *processors("after_output"),
        *stage("analysis"),
    ]


def json_schema(with_installed: bool = True) -> dict[str, Any]:
    """The JSON Schema of a pipeline config file, each point's processors spelt out by name
    with their options; `with_installed=False` leaves out processors from installed packages
    (the schema committed in the repo)."""
    schema = PipelineConfig.model_json_schema()
    schema["title"] = "Switchboard pipeline config"
    del schema["properties"]["name"]  # the file's name
    schema["required"].remove("name")
    types = processor_types() if with_installed else BUILTIN_PROCESSORS
    defs = schema.setdefault("$defs", {})
    points = {}
    for point in POINTS:
        choices = []
        for name, kind in sorted(types.items()):
            if not isinstance(kind, ProcessorType) or point not in kind.points:
                continue
            options = kind.options.model_json_schema(ref_template="#/$defs/{model}")
            defs.update(options.pop("$defs", {}))
            choices.append(
                {
                    "type": "object",
                    "description": kind.summary,
                    "properties": {"name": {"const": name}, "options": options},
                    "required": ["name"],
                    "additionalProperties": False,
                }
            )
        points[point] = {"type": "array", "items": {"oneOf": choices}}
    schema["properties"]["processors"] = {
        "type": "object",
        "description": schema["properties"]["processors"].get("description", ""),
        "properties": points,
        "additionalProperties": False,
    }
    defs.pop("ProcessorConfig", None)
    return schema
