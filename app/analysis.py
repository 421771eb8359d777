"""Post-call analysis: the transcript, read by an LLM into validated structured output.

The analysis LLM is the config's `analysis` stage, or the call's own `llm` (a realtime
config, whose model speaks rather than writes JSON, needs an `analysis` stage). It is asked
for JSON matching a schema (enforced by the provider where Pipecat can ask for that) and
its answer is validated with pydantic; an invalid answer is retried once, then the
failure is stored: no value is ever made up.
"""

import json
import re
from typing import Any, Literal

from loguru import logger
from pipecat.processors.aggregators.llm_context import LLMContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from app.request_body import REQUEST_BODY
from pipelines import services
from pipelines.config import PipelineConfig

ATTEMPTS = 2
INSTRUCTION = (
    "You analyse phone calls between an AI agent and a caller. Read the transcript and answer with one JSON "
    "object only, no prose, matching this JSON schema:\n{schema}"
)
_FIELD_TYPES: dict[str, Any] = {"text": str, "boolean": bool, "number": float}


class AnalysisField(BaseModel):
    """A custom value an agent wants from each of its calls."""

    model_config = REQUEST_BODY

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    type: Literal["text", "boolean", "number", "enum"]
    description: str = Field(min_length=1, max_length=1000)
    options: list[str] | None = Field(
        default=None, min_length=1, max_length=50, description="enum: the allowed values"
    )

    @model_validator(mode="after")
    def _options_for_enum(self) -> "AnalysisField":
        if (self.type == "enum") != (self.options is not None):
            raise ValueError("options are required for an enum field, and only for one")
        return self


class AnalysisFailed(Exception):
    pass


def result_model(fields: list[AnalysisField]) -> type[BaseModel]:
    """The pydantic model an answer must validate against."""
    custom = create_model(  # type: ignore[call-overload]  # the fields are made at run time
        "CustomFields",
        __config__=ConfigDict(extra="forbid"),
        **{
            f.name: (
                Literal[tuple(f.options or ())] if f.type == "enum" else _FIELD_TYPES[f.type],
                Field(description=f.description),
            )
            for f in fields
        },
    )
    return create_model(
        "CallAnalysis",
        __config__=ConfigDict(extra="forbid"),
        summary=(
            str,
            Field(
                min_length=1,
                description="Two or three sentences on what the call was about and how it went",
            ),
        ),
        sentiment=(  # type: ignore[arg-type]  # mypy can't yet take a Literal as a value
            Literal["positive", "neutral", "negative"],  # type: ignore[maybe-unrecognized-str-typeform]
            Field(description="The caller's overall sentiment"),
        ),
        topics=(list[str], Field(description="Short topics the call covered")),
        action_items=(list[str], Field(description="Follow-ups someone must do after the call")),
        custom=(custom, Field(description="Values the agent's owner asked for")),
    )


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the strict form providers enforce: every property
    required, no extra properties, references inlined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def fix(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return fix(defs[node["$ref"].rsplit("/", 1)[-1]])
            node = {k: fix(v) for k, v in node.items() if k != "title"}
            if node.get("type") == "object":
                node["required"] = list(node.get("properties", {}))
                node["additionalProperties"] = False
            return node
        if isinstance(node, list):
            return [fix(item) for item in node]
        return node

    return fix(schema)


def transcript_text(entries: list, flow_state: dict | None = None) -> str:
    """The call as the analysis reads it: who said what, the conversation flow's node changes
    and, for a flow call, the values it collected."""
    lines = []
    for entry in entries:
        if entry.speaker == "TOOL":
            continue
        if entry.speaker == "SYSTEM":
            lines.append(f"[flow node: {json.loads(entry.content)['node']}]")
            continue
        speaker = "Agent" if entry.speaker == "AGENT" else "Caller"
        lines.append(f"{speaker}: {entry.content}{' [interrupted]' if entry.interrupted else ''}")
    if flow_state and flow_state.get("values"):
        lines.append(f"[collected values: {json.dumps(flow_state['values'])}]")
    return "\n".join(lines)


def parse(text: str | None, model: type[BaseModel]) -> dict[str, Any]:
    """Validate an LLM answer (JSON, possibly in a code fence); AnalysisFailed if it isn't one."""
    if not text or not text.strip():
        raise AnalysisFailed("the LLM gave an empty answer")
    match = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    try:
        data = json.loads(match.group(1) if match else text)
        return model.model_validate(data).model_dump()
    except json.JSONDecodeError as exc:
        raise AnalysisFailed(f"the answer is not JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise AnalysisFailed(f"the answer does not match the schema: {problems}") from None


async def analyse(
    config: PipelineConfig, transcript: str, fields: list[AnalysisField], language: str = "en"
) -> tuple[dict[str, Any] | None, str | None, int, str | None]:
    """Run the analysis: (result, error, attempts, model); exactly one of result and error is set."""
    stage = config.analysis or config.llm
    if stage is None:
        return None, f"pipeline '{config.name}' has no analysis LLM: set `analysis:` in it", 0, None
    model_name = stage.options.get("model")
    if not transcript.strip():
        return None, "the call has no transcript to analyse", 0, model_name
    model = result_model(fields)
    schema = strict_schema(model)
    llm = services.create(
        stage, services.ServiceContext(system_prompt="", voice_id="", language=language)
    )
    error = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            answer = await llm.run_inference(
                LLMContext(messages=[{"role": "user", "content": f"Transcript:\n{transcript}"}]),
                system_instruction=INSTRUCTION.format(schema=json.dumps(schema)),
                response_schema=schema,
            )
            return parse(answer, model), None, attempt, model_name
        except AnalysisFailed as exc:
            error = str(exc)
        except Exception as exc:  # the provider failed: recorded like an invalid answer
            error = f"the LLM call failed: {type(exc).__name__}: {exc}"
        logger.warning(f"analysis attempt {attempt} failed: {error}")
    return None, error, ATTEMPTS, model_name
