"""Scenario files: Pipecat's format (`pipecat.evals.scenario`), read by Pipecat's own loader,
plus a `switchboard:` block (per file or per scenario) of expectations on the whole call:

    switchboard:
      tools: [{name: book_table, args: {party_size: 2}}]  # calls the agent must make
      flow_path: [collect_name, confirm]   # flow nodes reached, in this order
      end_reason: agent_ended
      must_say: ["booked"]                 # words the agent must say (any turn)
      must_not_say: ["sorry"]
      voice_to_voice_ms: 2500              # every turn's budget, caller end of speech → agent audio
      max_cost_usd: 0.05
      tool_results: {check_order: {status: shipped}}  # answers to `client` tools' calls
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipecat.evals.scenario import (
    EvalScenarioFile,
    EvalScriptScenario,
    EvalSimulationScenario,
    _load_mapping,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SUPPORTED_EVENTS = {
    "user_transcription",
    "response",
    "llm_response",
    "tts_response",
    "function_call",
    "function_call_stopped",
}
"""The turn expectations Switchboard checks (Pipecat's names); others are refused at load."""
BARGE_IN_EVENT = "bot_started_speaking"
"""The one `send_after:` event: the caller speaks `delay_ms` after the agent's reply to the
turn before starts reaching them, over it."""


class ToolCallExpectation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    args: dict[str, Any] | None = Field(
        default=None, description="A subset of the call's arguments"
    )


class CallExpectations(BaseModel):
    """The `switchboard:` block: what the whole call must show."""

    model_config = ConfigDict(extra="forbid")

    tools: list[ToolCallExpectation] = Field(default_factory=list)
    flow_path: list[str] = Field(default_factory=list)
    end_reason: str | None = None
    must_say: list[str] = Field(default_factory=list)
    must_not_say: list[str] = Field(default_factory=list)
    voice_to_voice_ms: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    tool_results: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Scenario:
    """One scenario: Pipecat's parsed scenario and Switchboard's call expectations."""

    name: str
    pipecat: EvalScriptScenario | EvalSimulationScenario
    expect: CallExpectations

    @property
    def simulated(self) -> bool:
        return isinstance(self.pipecat, EvalSimulationScenario)

    @property
    def needs_llm(self) -> bool:
        """It plays a simulated caller or asks the judge."""
        if isinstance(self.pipecat, EvalSimulationScenario):
            return True
        return any(e.eval for turn in self.pipecat.turns for e in turn.expect)


class ScenarioError(ValueError):
    """A scenario file that does not load; the message names the file and the problem."""


def load_file(path: Path) -> list[Scenario]:
    try:
        loaded = EvalScenarioFile.load(path)
        data = _load_mapping(path)
    except (ValueError, OSError) as exc:
        raise ScenarioError(str(exc)) from exc
    entries = data.get("scenarios") or [data]
    defaults = {k: v for k, v in data.items() if k != "scenarios"}
    scenarios = []
    for entry, parsed in zip(entries, loaded.scenarios, strict=True):
        block = {**(defaults.get("switchboard") or {}), **(entry.get("switchboard") or {})}
        try:
            expect = CallExpectations.model_validate(block)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ScenarioError(f"{path}: {parsed.name}: switchboard: {problems}") from exc
        if isinstance(parsed, EvalScriptScenario):
            for index, turn in enumerate(parsed.turns):
                if turn.dtmf or turn.audio or turn.image or turn.parts:
                    raise ScenarioError(
                        f"{path}: {parsed.name}: turn #{index}: only 'user:' text turns are "
                        "supported (no dtmf, audio, image or pauses yet)"
                    )
                if turn.send_after and (turn.send_after.event != BARGE_IN_EVENT or index == 0):
                    raise ScenarioError(
                        f"{path}: {parsed.name}: turn #{index}: send_after: only "
                        f"{{event: {BARGE_IN_EVENT}, delay_ms: N}} after an earlier turn (barge-in)"
                    )
                for expectation in turn.expect:
                    if expectation.event not in SUPPORTED_EVENTS:
                        raise ScenarioError(
                            f"{path}: {parsed.name}: turn #{index}: event "
                            f"'{expectation.event}' is not supported (supported: "
                            f"{', '.join(sorted(SUPPORTED_EVENTS))})"
                        )
        scenarios.append(Scenario(parsed.name, parsed, expect))
    return scenarios


def load(path: Path) -> list[Scenario]:
    """The scenarios of a file, or of every scenario file (`*.yaml`, `*.yml`) under a directory."""
    if path.is_dir():
        from pipecat.evals.scenario import is_scenario_file

        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        scenarios = [s for f in files if is_scenario_file(f) for s in load_file(f)]
    else:
        scenarios = load_file(path)
    if not scenarios:
        raise ScenarioError(f"{path}: no scenarios")
    return scenarios
