"""The LLMs of an eval run: Pipecat's judge (`EvalJudge` over an `LLMClassifier`) and the
simulated caller (Pipecat's `EvalPersona`), each either as the scenario's `judge.eval:` /
`simulator:` block names it (Pipecat's own config: `ollama` by default, any `endpoint`), or on
one OpenAI-compatible server given for the whole run (`EvalLLM`: a local llama.cpp server,
a hosted model, or the tests' scripted LLM)."""

from dataclasses import dataclass
from typing import Any

from pipecat.classifiers.llm.classifier import LLMClassifier
from pipecat.evals.judge import EvalJudge
from pipecat.evals.persona import EvalPersona
from pipecat.evals.services import llm_service_from_config
from pipecat.evals.simulation import EvalSimulationScenario
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import LLMService
from pipecat.services.openai.llm import OpenAILLMService


@dataclass(frozen=True)
class EvalLLM:
    """An OpenAI-compatible chat-completions server that judges and plays callers."""

    base_url: str
    model: str
    api_key: str = "none"

    def service(self) -> OpenAILLMService:
        return OpenAILLMService(
            base_url=self.base_url,
            api_key=self.api_key,
            settings=OpenAILLMService.Settings(model=self.model),
        )


def make_judge(config: dict, llm: EvalLLM | None) -> EvalJudge:
    """The judge of a scenario: on `llm` if given, else as its `judge.eval:` block says."""
    if llm is None:
        return EvalJudge.from_config(config)
    service = llm.service()
    return EvalJudge(LLMClassifier(llm=service), explainer=service)


class SimulatedCaller:
    """Plays a simulation's persona: Pipecat's persona instruction and `end_call` tool, one
    out-of-pipeline inference per turn. A turn that calls `end_call` (no words) hangs up."""

    def __init__(self, simulation: EvalSimulationScenario, llm: EvalLLM | None):
        service: LLMService[Any] = (
            llm.service()
            if llm
            else llm_service_from_config(simulation.simulator, where="simulator")
        )
        self._persona = EvalPersona(simulation.persona, simulation.goal, service)

    async def next_turn(self, agent_said: str) -> str | None:
        """What the caller says to `agent_said`, or None when they hang up."""
        context: LLMContext = self._persona.context
        if agent_said.strip() or not context.get_messages():
            context.add_message({"role": "user", "content": agent_said or "(The call connects.)"})
        reply = await self._persona.llm.run_inference(
            context, max_tokens=200, system_instruction=self._persona.instruction
        )
        if not reply or not reply.strip():
            return None
        context.add_message({"role": "assistant", "content": reply})
        return reply.strip()
