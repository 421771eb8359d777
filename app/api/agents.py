"""Agents: create, list, read, update, delete."""

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from app.calls.tools import DEFAULT_TIMEOUT_SECS
from app.deps import CallerDep, DbDep, StateDep
from app.errors import ERROR_RESPONSES, APIError, not_found
from app.state import AppState
from app.storage import agents as agent_store
from app.storage import sessions as session_store
from app.storage.ids import new_id, utcnow
from app.analysis import AnalysisField
from app.storage.models import Agent
from pipelines.config import UnknownPipelineError

router = APIRouter(prefix="/v1/agents", tags=["agents"], responses=ERROR_RESPONSES)

Name = Annotated[str, Field(min_length=1, max_length=200)]
Prompt = Annotated[str, Field(min_length=1, max_length=20_000)]


def _is_none(value) -> bool:
    return value is None


class ToolDefinition(BaseModel):
    """A function the agent's LLM may call."""

    model_config = ConfigDict(extra="forbid")

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
    type: Literal["client", "webhook", "end_call", "transfer_call"] = Field(
        default="client",
        exclude_if=lambda v: v == "client",
        description="client: the WebSocket client runs it (tool.call / tool.result); webhook: the server POSTs "
        "the arguments to url; end_call and transfer_call are built in",
    )
    url: str | None = Field(
        default=None,
        exclude_if=_is_none,
        pattern=r"^https?://[^\s/]+\S*$",
        max_length=2000,
        description="webhook: where the arguments are POSTed",
    )
    secret: str | None = Field(
        default=None,
        exclude_if=_is_none,
        min_length=16,
        max_length=200,
        description="webhook: HMAC-SHA256 key of the X-Switchboard-Signature header; generated if omitted",
    )
    timeout_secs: float = Field(
        default=DEFAULT_TIMEOUT_SECS,
        exclude_if=lambda v: v == DEFAULT_TIMEOUT_SECS,
        gt=0,
        le=60,
        description="How long a webhook or client tool may take",
    )
    phone_number: str | None = Field(
        default=None,
        exclude_if=_is_none,
        pattern=r"^\+[1-9][0-9]{1,14}$",
        description="transfer_call: where the call is moved (E.164)",
    )

    @model_validator(mode="after")
    def _fits_type(self) -> "ToolDefinition":
        if self.type == "webhook":
            if self.url is None:
                raise ValueError("a webhook tool needs a url")
            self.secret = self.secret or f"whsec_{secrets.token_urlsafe(24)}"
        if self.type == "transfer_call" and self.phone_number is None:
            raise ValueError("a transfer_call tool needs a phone_number")
        return self


def _unique_tool_names(tools: list[ToolDefinition]) -> list[ToolDefinition]:
    names = [t.name for t in tools]
    if len(names) != len(set(names)):
        raise ValueError("tool names must be unique")
    return tools


Tools = Annotated[list[ToolDefinition], Field(max_length=64), AfterValidator(_unique_tool_names)]
FirstSpeaker = Annotated[Literal["agent", "user"], Field(description="agent: it greets first; user: it waits")]
MaxDuration = Annotated[int, Field(ge=60, le=7200, description="Seconds before the call says goodbye and ends")]
InactivityTimeout = Annotated[int, Field(ge=10, le=300, description="Seconds of silence before inactivity_action")]
InactivityAction = Annotated[
    Literal["end_call", "prompt"], Field(description="end_call, or prompt: ask once if the caller is there, then end")
]
PhoneNumbers = Annotated[
    list[Annotated[str, Field(pattern=r"^\+[1-9][0-9]{1,14}$")]],
    Field(max_length=20, description="E.164 numbers whose inbound calls reach this agent (Twilio voice webhook)"),
]


def _unique_field_names(fields: list[AnalysisField]) -> list[AnalysisField]:
    names = [f.name for f in fields]
    if len(names) != len(set(names)):
        raise ValueError("analysis field names must be unique")
    return fields


WebhookUrl = Annotated[
    str, Field(pattern=r"^https?://[^\s/]+\S*$", max_length=2000, description="Where session events are POSTed")
]
WebhookSecret = Annotated[
    str, Field(min_length=16, max_length=200, description="HMAC-SHA256 key of the webhook signature; generated if omitted")
]
WebhookEvents = Annotated[
    list[Literal["session.started", "session.ended", "transcript.updated", "analysis.completed"]],
    Field(min_length=1, description="Events the webhook gets; all but transcript.updated (one per turn) if omitted"),
]
AnalysisFields = Annotated[
    list[AnalysisField], Field(max_length=20, description="Custom values the post-call analysis extracts"),
    AfterValidator(_unique_field_names),
]


def _webhook_secret(agent: Agent) -> None:
    """An agent with a webhook always has a secret to sign it with."""
    if agent.webhook_url and not agent.webhook_secret:
        agent.webhook_secret = f"whsec_{secrets.token_urlsafe(24)}"


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    voice_id: Name
    system_prompt: Prompt
    language: str = Field(default="en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    tools: Tools = Field(default_factory=list)
    max_turns: int = Field(default=50, ge=1, le=500)
    greeting: str | None = Field(default=None, max_length=2000)
    pipeline: str | None = Field(default=None, description="Pipeline config name; the server default if omitted")
    phone_numbers: PhoneNumbers = Field(default_factory=list)
    webhook_url: WebhookUrl | None = None
    webhook_secret: WebhookSecret | None = None
    webhook_events: WebhookEvents | None = None
    analysis_fields: AnalysisFields = Field(default_factory=list)
    first_speaker: FirstSpeaker = "agent"
    interruptible: bool = Field(default=True, description="False: the caller can't cut the agent off")
    max_duration: MaxDuration = 3000
    inactivity_timeout: InactivityTimeout | None = None
    inactivity_action: InactivityAction = "end_call"
    recording_enabled: bool = True


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    voice_id: Name | None = None
    system_prompt: Prompt | None = None
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    tools: Tools | None = None
    max_turns: int | None = Field(default=None, ge=1, le=500)
    greeting: str | None = Field(default=None, max_length=2000)
    pipeline: str | None = None
    status: Literal["active", "paused"] | None = None
    phone_numbers: PhoneNumbers | None = None
    webhook_url: WebhookUrl | None = None
    webhook_secret: WebhookSecret | None = None
    webhook_events: WebhookEvents | None = None
    analysis_fields: AnalysisFields | None = None
    first_speaker: FirstSpeaker | None = None
    interruptible: bool | None = None
    max_duration: MaxDuration | None = None
    inactivity_timeout: InactivityTimeout | None = None
    inactivity_action: InactivityAction | None = None
    recording_enabled: bool | None = None


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    voice_id: str
    system_prompt: str
    language: str
    tools: list[ToolDefinition]
    max_turns: int
    greeting: str | None
    pipeline: str
    phone_numbers: list[str]
    webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, description="Verifies the webhook's X-Switchboard-Signature")
    webhook_events: list[str] | None = Field(default=None, description="null: all but transcript.updated")
    analysis_fields: list[AnalysisField] | None = None
    first_speaker: FirstSpeaker
    interruptible: bool
    max_duration: int
    inactivity_timeout: int | None
    inactivity_action: InactivityAction
    recording_enabled: bool
    status: Literal["active", "paused", "deleted"]
    created_at: datetime
    updated_at: datetime


class AgentList(BaseModel):
    items: list[AgentOut]
    total: int
    limit: int
    offset: int


def check_pipeline_and_voice(state: AppState, pipeline: str, voice_id: str) -> None:
    """422 unless the pipeline exists and offers the voice (names are case-sensitive)."""
    try:
        config = state.catalog.get(pipeline)
    except UnknownPipelineError as exc:
        raise APIError(
            422, "unknown_pipeline", f"unknown pipeline '{pipeline}'; known pipelines: {', '.join(exc.known)}",
            {"pipelines": exc.known},
        ) from None
    voices = sorted(config.tts.voices)
    if voice_id not in voices:
        raise APIError(
            422, "unknown_voice",
            f"voice '{voice_id}' is not offered by pipeline '{pipeline}'; valid voices: {', '.join(voices)}",
            {"voices": voices},
        )


async def load_agent(db, caller, agent_id: str) -> Agent:
    agent = await agent_store.get_agent(db, caller.account_id, agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    return agent


@router.post("", status_code=201, response_model=AgentOut, summary="Create an agent")
@router.post("/create", status_code=201, response_model=AgentOut, summary="Create an agent (alias)")
async def create_agent(body: AgentCreate, state: StateDep, db: DbDep, caller: CallerDep) -> Agent:
    pipeline = body.pipeline or state.settings.default_pipeline
    check_pipeline_and_voice(state, pipeline, body.voice_id)
    agent = Agent(
        id=new_id("agt"),
        account_id=caller.account_id,
        **body.model_dump(exclude={"pipeline", "tools"}),
        tools=[t.model_dump() for t in body.tools],
        pipeline=pipeline,
        status="active",
    )
    _webhook_secret(agent)
    db.add(agent)
    await db.commit()
    return agent


@router.get("", response_model=AgentList, summary="List agents")
async def list_agents(
    db: DbDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    status: Literal["active", "paused", "deleted"] | None = None,
) -> dict:
    items, total = await agent_store.list_agents(db, caller.account_id, status=status, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/{agent_id}", response_model=AgentOut, summary="Get an agent")
async def get_agent(agent_id: str, db: DbDep, caller: CallerDep) -> Agent:
    return await load_agent(db, caller, agent_id)


@router.patch("/{agent_id}", response_model=AgentOut, summary="Update an agent")
async def update_agent(agent_id: str, body: AgentUpdate, state: StateDep, db: DbDep, caller: CallerDep) -> Agent:
    agent = await load_agent(db, caller, agent_id)
    if agent.status == "deleted":
        raise APIError(409, "agent_deleted", f"agent '{agent_id}' is deleted and cannot be changed")
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "voice_id", "system_prompt", "language", "tools", "max_turns", "pipeline", "status",
                  "phone_numbers", "first_speaker", "interruptible", "max_duration", "inactivity_action",
                  "recording_enabled"):
        if field in changes and changes[field] is None:
            raise APIError(422, "validation_error", f"{field}: may not be null")
    check_pipeline_and_voice(state, changes.get("pipeline", agent.pipeline), changes.get("voice_id", agent.voice_id))
    for field, value in changes.items():
        setattr(agent, field, value)
    _webhook_secret(agent)
    agent.updated_at = utcnow()
    await db.commit()
    return agent


@router.delete("/{agent_id}", response_model=AgentOut, summary="Delete an agent and end its live sessions")
async def delete_agent(agent_id: str, state: StateDep, db: DbDep, caller: CallerDep) -> Agent:
    agent = await load_agent(db, caller, agent_id)
    if agent.status != "deleted":
        agent.status = "deleted"
        agent.updated_at = utcnow()
        await db.commit()
    await session_store.end_unconnected(db, agent.id, "agent_deleted")
    await state.control.end_agent_calls(agent.id, "agent_deleted")
    return agent
