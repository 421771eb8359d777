"""Agents: their fields and rules (one definition for the API, the dashboard and inline
calls), how the API shows them, and creating, changing and deleting them."""

import secrets
import typing
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.analysis import AnalysisField
from app.calls.control import CallControl
from app.calls.tools import DEFAULT_ANSWER_TIMEOUT_SECS, DEFAULT_TIMEOUT_SECS
from app.errors import APIError, not_found
from app.flows import check_flow
from app.outbound import OutboundUrl
from app.request_body import REQUEST_BODY, WHOLE_NUMBER, left_out_unchanged
from app.storage import agents as agent_store
from app.storage import sessions as session_store
from app.storage import telephony as telephony_store
from app.storage.ids import new_id, utcnow
from app.storage.models import Agent
from app.telephony.numbers import E164Number, TransferTarget
from app.voicemail import Voicemail
from pipelines.config import (
    PipelineCatalog,
    PipelineConfig,
    PipelineConfigError,
    UnknownPipelineError,
)


def _between(low: int | float, high: int | float, unit: str = "") -> Any:
    """A range rule whose error names the whole range (the field name comes with the error)."""

    def check(value):
        if value is not None and not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}{unit} (got {value})")
        return value

    return AfterValidator(check)


Name = Annotated[str, Field(min_length=1, max_length=200)]
VoiceId = Annotated[
    str, Field(min_length=1, max_length=200, description="A voice the pipeline offers")
]
Prompt = Annotated[str, Field(min_length=1, max_length=20_000)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
Greeting = Annotated[
    str, Field(max_length=2000, description="What the agent says first (when it speaks first)")
]
MaxTurns = Annotated[int, Field(ge=1, le=500), WHOLE_NUMBER]
PipelineName = Annotated[
    str, Field(description="Pipeline config name; the server default if omitted")
]
Interruptible = Annotated[bool, Field(description="False: the caller can't cut the agent off")]


def _is_none(value) -> bool:
    return value is None


class ToolFields(BaseModel):
    """What every tool has, as stored and shown."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(min_length=1, max_length=2000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema (type object) of the arguments",
    )

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError("parameters must be a JSON Schema of type 'object'")
        if not isinstance(value.get("properties", {}), dict):
            raise ValueError("parameters.properties must be an object")
        required = value.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError("parameters.required must be a list of property names")
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from None
        return value

    # Fields left at their defaults are left out of what is stored and shown.
    type: Literal["client", "webhook", "collect", "end_call", "transfer_call"] = Field(
        default="client",
        exclude_if=lambda v: v == "client",
        description="client: the WebSocket client runs it (tool.call / tool.result); webhook: the server POSTs "
        "the arguments to url; collect, end_call and transfer_call are built in (collect: the "
        "arguments are kept as the call's collected values)",
    )
    url: str | None = Field(
        default=None, exclude_if=_is_none, description="webhook: where the arguments are POSTed"
    )
    timeout_secs: float = Field(
        default=DEFAULT_TIMEOUT_SECS,
        exclude_if=lambda v: v == DEFAULT_TIMEOUT_SECS,
        gt=0,
        le=60,
        description="How long a webhook or client tool may take",
    )
    phone_number: str | None = Field(
        default=None, exclude_if=_is_none, description="transfer_call: where the call is moved"
    )
    mode: Literal["cold", "warm"] = Field(
        default="cold",
        exclude_if=lambda v: v == "cold",
        description="transfer_call: cold moves the call at once; warm (Twilio) rings the person, "
        "reads them a summary of the call, then joins the caller to them, and if nobody answers "
        "the agent carries on",
    )
    answer_timeout_secs: Annotated[int, _between(5, 120, " s"), WHOLE_NUMBER] = Field(
        default=DEFAULT_ANSWER_TIMEOUT_SECS,
        exclude_if=lambda v: v == DEFAULT_ANSWER_TIMEOUT_SECS,
        json_schema_extra={"minimum": 5, "maximum": 120},
        description="transfer_call, warm: how long the person's phone rings",
    )


class ToolIn(ToolFields):
    """A function the agent's LLM may call."""

    model_config = REQUEST_BODY

    url: OutboundUrl | None = Field(
        default=None,
        exclude_if=_is_none,
        description="webhook: where the arguments are POSTed (a public address)",
    )
    secret: str | None = Field(
        default=None,
        exclude_if=_is_none,
        min_length=16,
        max_length=200,
        description="webhook: HMAC-SHA256 key of the X-Switchboard-Signature header; if omitted, the "
        "same-named tool's current one, or a new one",
    )
    phone_number: TransferTarget | None = Field(
        default=None,
        exclude_if=_is_none,
        description="transfer_call: where the call is moved (E.164)",
    )

    @model_validator(mode="after")
    def _fits_type(self) -> "ToolIn":
        if self.type == "webhook" and self.url is None:
            raise ValueError("a webhook tool needs a url")
        if self.type == "transfer_call" and self.phone_number is None:
            raise ValueError("a transfer_call tool needs a phone_number")
        if self.type != "transfer_call" and self.model_fields_set & {"mode", "answer_timeout_secs"}:
            raise ValueError("mode and answer_timeout_secs are for transfer_call tools only")
        if self.mode == "cold" and "answer_timeout_secs" in self.model_fields_set:
            raise ValueError("answer_timeout_secs is for mode 'warm' only")
        return self


class ToolOut(ToolFields):
    """A tool as the API shows it: its secret in full only in the response that set it."""

    secret: str | None = Field(
        default=None,
        exclude_if=_is_none,
        description="webhook: the full secret, only in the response that set it",
    )
    secret_last4: str | None = Field(
        default=None, exclude_if=_is_none, description="webhook: the secret's end"
    )


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(24)}"


def stored_tools(tools: list[ToolIn], current: Sequence[dict] = ()) -> list[dict]:
    """The tools as stored: a webhook tool without a secret keeps its same-named current one, or gets a new one."""
    kept = {tool["name"]: tool.get("secret") for tool in current if tool.get("type") == "webhook"}
    stored = [tool.model_dump() for tool in tools]
    for tool in stored:
        if tool.get("type") == "webhook" and not tool.get("secret"):
            tool["secret"] = kept.get(tool["name"]) or new_secret()
    return stored


def _unique_tool_names(tools: list[ToolIn]) -> list[ToolIn]:
    names = [t.name for t in tools]
    if len(names) != len(set(names)):
        raise ValueError("tool names must be unique")
    return tools


Tools = Annotated[list[ToolIn], Field(max_length=64), AfterValidator(_unique_tool_names)]
FirstSpeaker = Annotated[
    Literal["agent", "user"], Field(description="agent: it greets first; user: it waits")
]
MaxDuration = Annotated[
    int,
    Field(
        json_schema_extra={"minimum": 60, "maximum": 7200},
        description="Seconds before the call says goodbye and ends",
    ),
    _between(60, 7200, " s"),
    WHOLE_NUMBER,
]
InactivityTimeout = Annotated[
    int,
    Field(
        json_schema_extra={"minimum": 10, "maximum": 300},
        description="Seconds of silence before inactivity_action",
    ),
    _between(10, 300, " s"),
    WHOLE_NUMBER,
]
Temperature = Annotated[
    float, Field(json_schema_extra={"minimum": 0, "maximum": 1}), _between(0, 1)
]
InactivityAction = Annotated[
    Literal["end_call", "prompt"],
    Field(description="end_call, or prompt: ask once if the caller is there, then end"),
]
Endpointing = Annotated[
    Literal["fast", "balanced", "patient"],
    Field(
        description="How soon a pause ends the caller's turn: fast, balanced or patient; "
        "null: the pipeline's default"
    ),
]
OverflowNumber = Annotated[
    TransferTarget,
    Field(
        description="Where an inbound call goes when the agent can't take it (server busy, the "
        "account at its cap, or the server draining): dialled instead of a busy signal or an "
        "apology. null: no overflow"
    ),
]
OverflowMode = Annotated[
    Literal["busy", "queue"],
    Field(
        description="What an inbound Twilio call does when the account is at its call cap: busy "
        "(busy or an apology, or overflow_number if set), or queue: it waits in line up to "
        "max_wait_secs and is connected when a place frees, in arrival order, or hears an "
        "apology (not with overflow_number; Telnyx and Plivo calls get busy)"
    ),
]
MaxWait = Annotated[
    int,
    Field(
        json_schema_extra={"minimum": 5, "maximum": 1800},
        description="overflow queue: the longest a caller waits before the apology",
    ),
    _between(5, 1800, " s"),
    WHOLE_NUMBER,
]
WaitMessage = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        description="overflow queue: what a waiting caller hears before the hold audio; "
        "null: the server's default",
    ),
]
PhoneNumbers = Annotated[
    list[E164Number],
    Field(
        max_length=20,
        description="E.164 numbers whose inbound calls reach this agent (Twilio voice webhook); "
        "a number answers one agent, in one account",
    ),
    AfterValidator(lambda numbers: list(dict.fromkeys(numbers))),
]


def _unique_field_names(fields: list[AnalysisField]) -> list[AnalysisField]:
    names = [f.name for f in fields]
    if len(names) != len(set(names)):
        raise ValueError("analysis field names must be unique")
    return fields


WebhookUrl = Annotated[
    OutboundUrl, Field(description="Where session events are POSTed (a public address)")
]
WebhookSecret = Annotated[
    str,
    Field(
        min_length=16,
        max_length=200,
        description="HMAC-SHA256 key of the webhook signature; generated if omitted",
    ),
]
WebhookEvents = Annotated[
    list[Literal["session.started", "session.ended", "transcript.updated", "analysis.completed"]],
    Field(
        min_length=1,
        description="Events the webhook gets; all but transcript.updated (one per turn) if omitted",
    ),
]
Flow = Annotated[
    dict[str, Any],
    Field(
        description="A conversation flow: a Pipecat flow config (its JSON Schema: GET /v1/flows/schema; "
        "initial_node, nodes with role_message, task_messages, functions, pre_actions/post_actions, "
        "context_strategy; global_functions). A function is transition_only or names one of the "
        "agent's tools; actions are tts_say or end_conversation. Invalid: 422 invalid_flow naming "
        "each problem's node and field. null: the system prompt alone",
        json_schema_extra={
            "example": {
                "initial_node": "greeting",
                "nodes": {
                    "greeting": {
                        "task_messages": [{"role": "system", "content": "Greet the caller."}],
                        "functions": [{"name": "end_call"}],
                    }
                },
            }
        },
    ),
]
AnalysisFields = Annotated[
    list[AnalysisField],
    Field(max_length=20, description="Custom values the post-call analysis extracts"),
    AfterValidator(_unique_field_names),
]


def _webhook_secret(agent: Agent) -> None:
    """An agent with a webhook always has a secret to sign it with."""
    if agent.webhook_url and not agent.webhook_secret:
        agent.webhook_secret = new_secret()


# The one definition of an agent's fields, rules and defaults: `AgentUpdate` is derived
# from it, inline calls (`app/api/calls.py`) reuse its field types.
class AgentCreate(BaseModel):
    model_config = REQUEST_BODY

    name: Name
    voice_id: VoiceId
    system_prompt: Prompt
    language: Language = "en"
    tools: Tools = Field(default_factory=list)
    max_turns: MaxTurns = 50
    greeting: Greeting | None = None
    pipeline: PipelineName | None = None
    phone_numbers: PhoneNumbers = Field(default_factory=list)
    webhook_url: WebhookUrl | None = None
    webhook_secret: WebhookSecret | None = None
    webhook_events: WebhookEvents | None = None
    analysis_fields: AnalysisFields = Field(default_factory=list)
    first_speaker: FirstSpeaker = "agent"
    interruptible: Interruptible = True
    max_duration: MaxDuration = 3000
    inactivity_timeout: InactivityTimeout | None = None
    inactivity_action: InactivityAction = "end_call"
    recording_enabled: bool = True
    endpointing: Endpointing | None = None
    overflow_number: OverflowNumber | None = None
    overflow: OverflowMode = "busy"
    max_wait_secs: MaxWait = 60
    wait_message: WaitMessage | None = None
    flow: Flow | None = None
    voicemail: Voicemail | None = Field(
        default=None,
        description="Answering-machine detection on this agent's outbound calls: hang up, or "
        "leave `message` after the beep (a campaign's own `voicemail` overrides it)",
    )


def _all_optional(
    model: type[BaseModel], name: str, not_null: set[str], **more: Any
) -> type[BaseModel]:
    """`model` for a PATCH: the same fields and rules, each optional (left out: unchanged), and
    null (as the schema says) only where `not_null` does not name the field."""
    fields: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        annotation: Any = (
            Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        )
        if field in not_null:
            fields[field] = (
                annotation,
                left_out_unchanged(
                    description=info.description, json_schema_extra=info.json_schema_extra
                ),
            )
        else:
            fields[field] = (
                annotation | None,
                Field(
                    default=None,
                    description=info.description,
                    json_schema_extra=info.json_schema_extra,
                ),
            )
    return create_model(name, __config__=model.model_config, **fields, **more)


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    voice_id: str
    system_prompt: str
    language: str
    tools: list[ToolOut]
    max_turns: int
    greeting: str | None
    pipeline: str
    phone_numbers: list[str]
    webhook_url: str | None = None
    webhook_secret: str | None = Field(
        default=None,
        description="Verifies the webhook's X-Switchboard-Signature: in full only in the response "
        "that set it (create, update, rotate); null elsewhere",
    )
    webhook_secret_last4: str | None = Field(
        default=None, description="The webhook secret's last 4 characters"
    )
    webhook_events: list[str] | None = Field(
        default=None, description="null: all but transcript.updated"
    )
    analysis_fields: list[AnalysisField] | None = None
    first_speaker: FirstSpeaker
    interruptible: bool
    max_duration: int
    inactivity_timeout: int | None
    inactivity_action: InactivityAction
    recording_enabled: bool
    endpointing: Endpointing | None = None
    overflow_number: OverflowNumber | None = None
    overflow: OverflowMode
    max_wait_secs: int
    wait_message: str | None = None
    flow: dict[str, Any] | None = None
    voicemail: Voicemail | None = None
    status: Literal["active", "paused", "deleted"]
    created_at: datetime
    updated_at: datetime


def _last4(secret: str | None) -> str | None:
    return secret[-4:] if secret else None


def agent_out(agent: Agent, shown: Collection[str] = ()) -> AgentOut:
    """The agent as the API shows it: each secret in full only if it is in `shown` (this
    response set it), else just its last 4 characters."""
    out = AgentOut.model_validate(agent)
    tools = [
        tool.model_copy(
            update={
                "secret": tool.secret if tool.secret in shown else None,
                "secret_last4": _last4(tool.secret),
            }
        )
        for tool in out.tools
    ]
    secret = agent.webhook_secret
    return out.model_copy(
        update={
            "tools": tools,
            "webhook_secret": secret if secret in shown else None,
            "webhook_secret_last4": _last4(secret),
        }
    )


def secrets_of(agent: Agent) -> set[str]:
    return {s for s in [agent.webhook_secret, *(tool.get("secret") for tool in agent.tools)] if s}


def pipeline_config(catalog: PipelineCatalog, pipeline: str) -> PipelineConfig:
    """The named pipeline config; 422 if there is none or its file does not load."""
    try:
        return catalog.get(pipeline)
    except UnknownPipelineError as exc:
        raise APIError(
            422,
            "unknown_pipeline",
            f"unknown pipeline '{pipeline}'; known pipelines: {', '.join(exc.known)}",
            {"pipelines": exc.known},
        ) from None
    except PipelineConfigError as exc:
        raise APIError(
            422,
            "invalid_pipeline",
            f"pipeline '{pipeline}' does not load: {'; '.join(exc.problems)}",
            {"problems": exc.problems},
        ) from None


def check_overflow(overflow: str, overflow_number: str | None) -> None:
    """422 when an agent's overflow settings contradict each other: a call at the cap either
    waits in line or is dialled on to the overflow number."""
    if overflow == "queue" and overflow_number:
        raise APIError(
            422,
            "validation_error",
            "overflow: 'queue' makes a call at the cap wait in line, overflow_number dials it on; "
            "set one of them (overflow_number null, or overflow 'busy')",
            {"fields": ["overflow", "overflow_number"]},
        )


def check_pipeline_and_voice(catalog: PipelineCatalog, pipeline: str, voice_id: str) -> None:
    """422 unless the pipeline exists, loads and offers the voice (names are case-sensitive)."""
    config = pipeline_config(catalog, pipeline)
    voices = sorted(config.voices)
    if voice_id not in voices:
        raise APIError(
            422,
            "unknown_voice",
            f"voice '{voice_id}' is not offered by pipeline '{pipeline}'; valid voices: {', '.join(voices)}",
            {"voices": voices},
        )


async def load_agent(db, caller, agent_id: str) -> Agent:
    agent = await agent_store.get_agent(db, caller.account_id, agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    return agent


async def _assign_numbers(db, agent: Agent, numbers: list[str]) -> None:
    """Give the agent its phone numbers; 409 if another agent, in any account, holds one."""
    try:
        await telephony_store.assign_numbers(db, agent, numbers)
    except telephony_store.NumberTaken as exc:
        if exc.agent_id is None:
            raise APIError(
                409,
                "phone_number_taken",
                f"phone_numbers: {exc.number} belongs to another account",
                {"field": "phone_numbers", "number": exc.number},
            ) from None
        raise APIError(
            409,
            "phone_number_in_use",
            f"phone_numbers: {exc.number} already answers agent '{exc.agent_id}'",
            {"field": "phone_numbers", "number": exc.number, "agent_id": exc.agent_id},
        ) from None


_NOT_NULL = {
    field
    for field, info in AgentOut.model_fields.items()
    if type(None) not in typing.get_args(info.annotation)
}
"""What an agent always has: an update may not set it to null."""

if TYPE_CHECKING:  # a type checker sees AgentCreate's fields; at run time each is optional

    class AgentUpdate(AgentCreate):
        status: Literal["active", "paused"] | None = None
else:
    AgentUpdate = _all_optional(
        AgentCreate,
        "AgentUpdate",
        _NOT_NULL,
        status=(Literal["active", "paused"], left_out_unchanged()),
    )


async def create_agent(
    db: AsyncSession,
    catalog: PipelineCatalog,
    default_pipeline: str,
    account_id: str,
    body: AgentCreate,
) -> Agent:
    """Store a new agent (its webhook and webhook tools get secrets if they have none)."""
    pipeline = body.pipeline or default_pipeline
    check_pipeline_and_voice(catalog, pipeline, body.voice_id)
    check_flow(body.flow, [t.model_dump() for t in body.tools])
    check_overflow(body.overflow, body.overflow_number)
    agent = Agent(
        id=new_id("agt"),
        account_id=account_id,
        **body.model_dump(exclude={"pipeline", "tools", "phone_numbers"}),
        tools=stored_tools(body.tools),
        pipeline=pipeline,
        status="active",
    )
    _webhook_secret(agent)
    db.add(agent)
    await _assign_numbers(db, agent, body.phone_numbers)
    await db.commit()
    return agent


async def update_agent(
    db: AsyncSession, catalog: PipelineCatalog, agent: Agent, body: AgentUpdate
) -> set[str]:
    """Apply the fields `body` sets; the secrets this update set (to show in full)."""
    if agent.status == "deleted":
        raise APIError(409, "agent_deleted", f"agent '{agent.id}' is deleted and cannot be changed")
    changes = body.model_dump(exclude_unset=True)
    check_pipeline_and_voice(
        catalog, changes.get("pipeline", agent.pipeline), changes.get("voice_id", agent.voice_id)
    )
    check_flow(
        changes.get("flow", agent.flow),
        [t.model_dump() for t in body.tools] if "tools" in changes else agent.tools,
    )
    check_overflow(
        changes.get("overflow", agent.overflow),
        changes.get("overflow_number", agent.overflow_number),
    )
    shown_before = secrets_of(agent)
    if "tools" in changes:
        changes["tools"] = stored_tools(body.tools, agent.tools)
    numbers = changes.pop("phone_numbers", None)
    for field, value in changes.items():
        setattr(agent, field, value)
    _webhook_secret(agent)
    agent.updated_at = utcnow()
    if numbers is not None:
        await _assign_numbers(db, agent, numbers)
    await db.commit()
    return secrets_of(agent) - shown_before


async def delete_agent(db: AsyncSession, control: CallControl, agent: Agent) -> None:
    """Mark the agent deleted, free its phone numbers and end its calls, wherever they run."""
    if agent.status != "deleted":
        agent.status = "deleted"
        agent.updated_at = utcnow()
        await telephony_store.release_numbers(db, agent.id)
        await db.commit()
    await session_store.end_unconnected(db, agent.id, "agent_deleted")
    await control.end_agent_calls(agent.id, "agent_deleted")
