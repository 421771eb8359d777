"""Runs a scenario as one real call and checks it.

The caller (`transports`) plays the scenario's turns, scripted or simulated, and hears each
reply; after the call the server's own record of it (`GET /v1/sessions/{id}` and its
transcript: the tool calls with their arguments, the flow path, the end reason, the cost) and
what the caller heard are checked against the turns' expectations (Pipecat's events) and the
`switchboard:` block.
"""

import asyncio
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
import openai
from pipecat.evals.judge import EvalJudge
from pipecat.evals.script import EvalExpectation, EvalScriptScenario
from pipecat.evals.simulation_judge import EvalSimulationJudge
from websockets.exceptions import WebSocketException

from app.evals import speech
from app.evals.judges import EvalLLM, SimulatedCaller, make_judge
from app.evals.scenarios import Scenario
from app.evals.transports import Caller, Reply, SessionCaller, TwilioCaller

ENDED_STATUSES = {"completed", "failed", "expired"}
CALL_ERRORS = (
    ConnectionError,
    OSError,
    TimeoutError,
    WebSocketException,
    httpx.HTTPError,
    openai.OpenAIError,
)
"""What ends an eval call early (a refused or dropped connection, an unreachable caller LLM):
the scenario fails with it."""
OPENER_WAIT_SECS = 8.0
"""How long an agent-first agent without a greeting gets to start speaking."""


@dataclass
class Target:
    """Where and how the eval calls are made."""

    server: str
    api_key: str
    agent_id: str
    transport: Literal["ws", "twilio"] = "ws"
    text: bool = False
    """Send `input.text` instead of speech (WebSocket only)."""
    llm: EvalLLM | None = None
    reply_timeout: float = 60.0


@dataclass
class Turn:
    """One turn as the caller lived it."""

    user: str | None
    heard: str
    """The agent's reply: Whisper's transcription of its audio (its text in `--text` runs)."""
    latency_ms: int | None
    """Voice-to-voice: the caller's end of speech (or text sent) → the agent's first audio."""


@dataclass
class ScenarioResult:
    name: str
    kind: Literal["script", "simulation"]
    passed: bool
    failures: list[str]
    turns: list[Turn] = field(default_factory=list)
    session_id: str | None = None
    end_reason: str | None = None
    cost_usd: float | None = None
    transcript: list[dict] = field(default_factory=list)
    """The server's transcript of the call (speaker, content)."""
    duration_s: float = 0.0

    @property
    def reason(self) -> str:
        return self.failures[0] if self.failures else ""

    @property
    def p50_ms(self) -> int | None:
        measured = [t.latency_ms for t in self.turns if t.latency_ms is not None]
        return int(statistics.median(measured)) if measured else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason, "p50_voice_to_voice_ms": self.p50_ms}


@dataclass
class _Segment:
    """The server's transcript of one turn: from a caller entry up to the next."""

    user: str = ""
    agent: list[str] = field(default_factory=list)
    tools: list[dict] = field(default_factory=list)


def _make_caller(target: Target, scenario: Scenario) -> Caller:
    if target.transport == "twilio":
        return TwilioCaller(target.server, target.api_key, target.agent_id)
    return SessionCaller(
        target.server,
        target.api_key,
        target.agent_id,
        text=target.text,
        tool_results=scenario.expect.tool_results,
    )


async def run_scenario(scenario: Scenario, target: Target) -> ScenarioResult:
    """Call the agent, play the scenario, and check what happened."""
    started = time.monotonic()
    kind: Literal["script", "simulation"] = "simulation" if scenario.simulated else "script"
    result = ScenarioResult(scenario.name, kind, passed=False, failures=[])
    async with httpx.AsyncClient(
        base_url=target.server.rstrip("/"), headers={"X-API-Key": target.api_key}, timeout=30
    ) as api:
        try:
            agent = await api.get(f"/v1/agents/{target.agent_id}")
        except httpx.HTTPError as exc:
            result.failures.append(f"the server did not answer: {type(exc).__name__}: {exc}")
            return result
        if agent.status_code != 200:
            result.failures.append(f"agent {target.agent_id}: {agent.status_code} {agent.text}")
            return result
        opening = _opening_wait(agent.json(), target)
        caller = _make_caller(target, scenario)
        try:
            await caller.open()
            result.session_id = caller.session_id
            if scenario.simulated:
                await _simulate(scenario, target, caller, opening, result)
            else:
                await _play_script(scenario, target, caller, opening, result)
        except CALL_ERRORS as exc:
            result.failures.append(f"the call failed: {type(exc).__name__}: {exc}")
        finally:
            await caller.close()
        if result.session_id:
            try:
                await _check_call(api, scenario, target, result)
            except CALL_ERRORS as exc:
                result.failures.append(f"the call's record: {type(exc).__name__}: {exc}")
    result.passed = not result.failures
    result.duration_s = round(time.monotonic() - started, 2)
    return result


async def _check_call(
    api: httpx.AsyncClient, scenario: Scenario, target: Target, result: ScenarioResult
) -> None:
    """Fetch the server's record of the ended call and check it (unless the call failed)."""
    assert result.session_id
    session, transcript = await _record(api, result.session_id, scenario)
    result.end_reason = session.get("end_reason")
    result.cost_usd = (session.get("cost") or {}).get("total")
    result.transcript = transcript
    if result.failures:
        return
    checks = _Checks(scenario, target, result, session, transcript)
    try:
        await checks.run()
    finally:
        if checks.judge is not None:
            await checks.judge.close()


def _opening_wait(agent: dict, target: Target) -> float:
    """How long to wait for the agent to speak first: its greeting, or a flow's first node or
    opener without one (it may say nothing: a short wait); 0 for a user-first agent."""
    if agent.get("first_speaker") == "user":
        return 0
    return target.reply_timeout if agent.get("greeting") else OPENER_WAIT_SECS


async def _open(caller: Caller, target: Target, wait: float, result: ScenarioResult) -> str:
    """The agent's unprompted opening, recorded as a turn without caller words if it spoke."""
    if not wait:
        return ""
    reply = await caller.reply(wait)
    if not reply.audio and not reply.text:
        return ""
    heard = await _heard(reply, caller, target)
    result.turns.append(_turn(None, reply, heard))
    return heard


async def _heard(reply: Reply, caller: Caller, target: Target) -> str:
    if target.text:
        return reply.text
    return await speech.transcribe(reply.audio, caller.sample_rate)


def _turn(user: str | None, reply: Reply, heard: str) -> Turn:
    latency = None if reply.latency is None else int(reply.latency * 1000)
    return Turn(user, heard, latency)


async def _play_script(
    scenario: Scenario, target: Target, caller: Caller, opening: float, result: ScenarioResult
) -> None:
    assert isinstance(scenario.pipecat, EvalScriptScenario)
    turns = list(scenario.pipecat.turns)
    await _open(caller, target, opening, result)
    if result.turns and turns and turns[0].user is None:
        turns.pop(0)  # the scenario's first turn observes the opening
    for index, turn in enumerate(turns):
        if caller.ended:
            result.failures.append(f"the call ended before the caller's turn {turn.user!r}")
            return
        if turn.user is not None:
            await caller.say(turn.user)
        following = turns[index + 1] if index + 1 < len(turns) else None
        if following is not None and following.send_after is not None:  # barge in on this reply
            await caller.agent_started(target.reply_timeout)
            reply = await caller.reply(following.send_after.delay_ms / 1000)
        else:
            reply = await caller.reply(target.reply_timeout)
        heard = await _heard(reply, caller, target)
        result.turns.append(_turn(turn.user, reply, heard))


async def _simulate(
    scenario: Scenario, target: Target, caller: Caller, opening: float, result: ScenarioResult
) -> None:
    simulation = scenario.pipecat
    assert not isinstance(simulation, EvalScriptScenario)
    persona = SimulatedCaller(simulation, target.llm)
    heard = await _open(caller, target, opening, result)
    deadline = time.monotonic() + simulation.max_duration_s
    for _ in range(simulation.max_turns):
        if caller.ended or time.monotonic() > deadline:
            return
        said = await persona.next_turn(heard)
        if said is None:
            return  # the persona hung up
        await caller.say(said)
        reply = await caller.reply(target.reply_timeout)
        heard = await _heard(reply, caller, target)
        result.turns.append(_turn(said, reply, heard))


async def _record(api: httpx.AsyncClient, session_id: str, scenario: Scenario):
    """The ended session (with its cost, when a budget needs it) and its transcript."""
    deadline = time.monotonic() + 20
    while True:
        session = (await api.get(f"/v1/sessions/{session_id}")).json()
        ended = session.get("status") in ENDED_STATUSES
        costed = session.get("cost") or scenario.expect.max_cost_usd is None
        if (ended and costed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    items = (await api.get(f"/v1/sessions/{session_id}/transcript")).json().get("items", [])
    transcript = [
        {"speaker": i["speaker"], "content": i["content"], "interrupted": i["interrupted"]}
        for i in items
    ]
    return session, transcript


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.casefold()).split())


def _says(text: str, phrase: str) -> bool:
    return _words(phrase) in _words(text)


def _call_text(name: str | None, args: dict | None) -> str:
    return f"{name or 'any tool'}({json.dumps(args) if args else ''})"


def _matches(call: dict, name: str | None, args: dict | None) -> bool:
    if name is not None and call.get("name") != name:
        return False
    arguments = call.get("arguments") or {}
    return all(arguments.get(k) == v for k, v in (args or {}).items())


class _Checks:
    """The checks of one finished call; failures go to `result.failures`."""

    def __init__(
        self,
        scenario: Scenario,
        target: Target,
        result: ScenarioResult,
        session: dict,
        transcript: list[dict],
    ):
        self.scenario = scenario
        self.target = target
        self.result = result
        self.session = session
        self.segments = _segments(transcript)
        self.judge: EvalJudge | None = None
        self.fail: Callable[[str], None] = result.failures.append

    def _judge(self) -> EvalJudge:
        if self.judge is None:
            self.judge = make_judge(self.scenario.pipecat.judge, self.target.llm)
        return self.judge

    async def run(self) -> None:
        if isinstance(self.scenario.pipecat, EvalScriptScenario):
            await self._turns(self.scenario.pipecat)
        else:
            await self._simulation()
        self._call()

    async def _turns(self, script: EvalScriptScenario) -> None:
        turns = list(script.turns)
        played = self.result.turns
        # The scenario's turns, aligned with what was played and with the server's segments.
        offset = 1 if played and played[0].user is None and turns and turns[0].user else 0
        for index, turn in enumerate(turns):
            position = index + offset
            if position >= len(played):
                break
            lived = played[position]
            spoken = sum(1 for t in played[: position + 1] if t.user is not None)
            segment = self.segments[spoken] if spoken < len(self.segments) else _Segment()
            judge = self._judge() if any(e.eval for e in turn.expect) else None
            if judge is not None:
                judge.add_user_message(lived.user)
                judge.add_assistant_message(" ".join(segment.agent) or lived.heard)
            for expectation in turn.expect:
                problem = await self._expectation(expectation, lived, segment, judge)
                if problem:
                    self.fail(f"turn {index + 1}: {problem}")

    async def _expectation(
        self, e: EvalExpectation, lived: Turn, segment: _Segment, judge: EvalJudge | None
    ) -> str | None:
        if e.event in ("function_call", "function_call_stopped"):
            made = ", ".join(_call_text(c.get("name"), c.get("arguments")) for c in segment.tools)
            if e.absent:
                return f"expected no tool call, got {made}" if segment.tools else None
            for call in e.calls or []:
                if not any(_matches(c, call.name, call.args) for c in segment.tools):
                    return f"expected a call to {_call_text(call.name, call.args)}, got {made or 'no tool call'}"
            return None
        if e.event == "user_transcription":
            text = segment.user
        elif e.event == "llm_response" or self.target.text:
            text = " ".join(segment.agent)
        else:  # response / tts_response: what the caller heard
            text = lived.heard
        what = "the caller's words" if e.event == "user_transcription" else "the agent's words"
        if e.absent:
            return f"expected no reply, the agent said {text!r}" if text.strip() else None
        if not text.strip():
            return f"{what}: nothing"
        if e.text_contains and not _says(text, e.text_contains):
            return f"{what} {text!r} do not contain {e.text_contains!r}"
        if e.text_excludes and _says(text, e.text_excludes):
            return f"{what} {text!r} contain {e.text_excludes!r}"
        if e.within_ms is not None and e.event != "user_transcription":
            if lived.latency_ms is None:
                return "no voice-to-voice time measured (no agent audio)"
            if lived.latency_ms > e.within_ms:
                return f"voice-to-voice {lived.latency_ms} ms over {e.within_ms} ms"
        if e.eval and judge is not None:
            verdict = await judge.evaluate(e.eval)
            if verdict.verdict != "yes":
                return f"judge: {e.eval!r}: {verdict.verdict} ({verdict.reason})"
        return None

    async def _simulation(self) -> None:
        simulation = self.scenario.pipecat
        assert not isinstance(simulation, EvalScriptScenario)
        messages: list[dict] = []
        for segment in self.segments:
            if segment.user:
                messages.append({"role": "user", "content": segment.user})
            for call in segment.tools:
                messages.append(
                    {
                        "role": "tool_call",
                        "name": call.get("name"),
                        "arguments": call.get("arguments") or {},
                        "cancelled": False,
                    }
                )
            if segment.agent:
                messages.append({"role": "assistant", "content": " ".join(segment.agent)})
        judgement = await EvalSimulationJudge(simulation, judge=self._judge()).judge(messages)
        if judgement.goal.verdict != "yes":
            self.fail(f"goal not met ({simulation.success}): {judgement.goal.reason}")
        for metric in judgement.metrics:
            if not metric.passed:
                self.fail(f"{metric.name}: {metric.reason}")

    def _call(self) -> None:
        expect = self.scenario.expect
        tools = [call for segment in self.segments for call in segment.tools]
        made = ", ".join(_call_text(c.get("name"), c.get("arguments")) for c in tools)
        for wanted in expect.tools:
            if not any(_matches(c, wanted.name, wanted.args) for c in tools):
                self.fail(
                    f"expected a call to {_call_text(wanted.name, wanted.args)}, got {made or 'no tool call'}"
                )
        path = ((self.session.get("flow") or {}).get("path")) or []
        remaining = iter(path)
        if expect.flow_path and not all(node in remaining for node in expect.flow_path):
            self.fail(f"flow path {path} does not pass through {expect.flow_path} in order")
        reason = self.session.get("end_reason")
        if expect.end_reason and reason != expect.end_reason:
            self.fail(f"ended {reason!r}, expected {expect.end_reason!r}")
        said = " ".join(
            [a for s in self.segments for a in s.agent] + [t.heard for t in self.result.turns]
        )
        for phrase in expect.must_say:
            if not _says(said, phrase):
                self.fail(f"the agent never said {phrase!r}")
        for phrase in expect.must_not_say:
            if _says(said, phrase):
                self.fail(f"the agent said {phrase!r}")
        if expect.voice_to_voice_ms is not None:
            for number, turn in enumerate(self.result.turns, start=1):
                if turn.latency_ms is not None and turn.latency_ms > expect.voice_to_voice_ms:
                    self.fail(
                        f"turn {number}: voice-to-voice {turn.latency_ms} ms over {expect.voice_to_voice_ms} ms"
                    )
        if expect.max_cost_usd is not None:
            cost = self.result.cost_usd
            if cost is None:
                self.fail("no cost recorded for the call")
            elif cost > expect.max_cost_usd:
                self.fail(f"cost ${cost:.4f} over ${expect.max_cost_usd:.4f}")


def _segments(transcript: list[dict]) -> list[_Segment]:
    """The transcript cut at each caller entry; the first segment is before the caller spoke."""
    segments = [_Segment()]
    for entry in transcript:
        if entry["speaker"] == "USER":
            segments.append(_Segment(user=entry["content"]))
        elif entry["speaker"] == "AGENT":
            segments[-1].agent.append(entry["content"])
        elif entry["speaker"] == "TOOL":
            try:
                segments[-1].tools.append(json.loads(entry["content"]))
            except ValueError:
                pass
    return segments


async def run_suite(
    scenarios: list[Scenario],
    target: Target,
    repeat: int = 1,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Every scenario `repeat` times, one call at a time, in order."""
    results = []
    for _ in range(repeat):
        for scenario in scenarios:
            result = await run_scenario(scenario, target)
            results.append(result)
            if on_result:
                on_result(result)
    return results
