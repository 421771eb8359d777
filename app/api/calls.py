"""The Calls API: start a call for a stored agent or an inline configuration, and get
back where the client or carrier connects (and, for carriers, the markup that does it).
Also serves a session's recording."""

from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import AliasChoices, BaseModel, Field

from app.agents import (
    FirstSpeaker,
    Flow,
    Greeting,
    InactivityAction,
    InactivityTimeout,
    Interruptible,
    Language,
    MaxDuration,
    PipelineName,
    Prompt,
    Temperature,
    Tools,
    VoiceId,
    check_pipeline_and_voice,
    load_agent,
    stored_tools,
)
from app.api.carriers import ANSWERS
from app.api.sessions import SessionOut, load_session, session_out
from app.api.twilio import stream_twiml
from app.calls import admission
from app.casing import CamelCaseAccepted
from app.deps import CallerDep, DbDep, StateDep
from app.errors import DRAINING_RESPONSES, ERROR_RESPONSES, APIError
from app.flows import check_flow
from app.recordings import recording_response
from app.state import AppState
from app.storage.calls import inline_agent
from app.storage.models import Agent, Session
from app.telephony import twilio
from app.telephony.relay import issue_relay_token
from app.urls import public_base_url, websocket_base
from app.voicemail import Voicemail, call_setting

router = APIRouter(tags=["calls"], responses=ERROR_RESPONSES)

INLINE_MAX_TURNS = 50
ConnectionType = Literal["twilio", "telnyx", "plivo", "websocket", "webrtc"]
CARRIERS = ("twilio", "telnyx", "plivo")
"""Connection types whose calls are phone calls the tenant places (the agent's `voicemail`
detection applies)."""


class CallCreate(CamelCaseAccepted):
    agent_id: str = Field(
        min_length=1, max_length=40, description="The stored agent that takes the call"
    )
    connection_type: ConnectionType = Field(
        default="twilio", description="Who connects: a carrier, or a client"
    )


class InlineCallCreate(CamelCaseAccepted):
    """A call with its whole agent configuration in the body (no stored agent); the fields
    and rules of a stored agent's, some with other defaults."""

    system_prompt: Prompt
    voice_id: VoiceId = Field(validation_alias=AliasChoices("voice_id", "voice"))
    language: Language
    greeting: Greeting
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The LLM model; the pipeline's own if omitted",
    )
    temperature: Temperature = 0
    first_speaker: FirstSpeaker = "agent"
    interruptible: Interruptible = False
    max_duration: MaxDuration = 3000
    inactivity_timeout: InactivityTimeout | None = None
    inactivity_action: InactivityAction = "end_call"
    recording_enabled: bool = True
    connection_type: ConnectionType = "twilio"
    tools: Tools = Field(default_factory=list)
    flow: Flow | None = None
    pipeline: PipelineName | None = None
    voicemail: Voicemail | None = None


class CallOut(BaseModel):
    session_id: str | None = Field(description="null for webrtc: the offer creates the session")
    connection_type: ConnectionType
    url: str = Field(description="Where the client or the carrier connects")
    markup: str | None = Field(
        description="twilio: TwiML; telnyx: TeXML; plivo: Plivo XML; else null"
    )
    session: SessionOut | None


def inline_config(body: InlineCallCreate, pipeline: str) -> dict[str, Any]:
    """The inline body as agent columns (plus what has no column), stored on the session."""
    return body.model_dump(exclude={"connection_type", "tools", "pipeline"}) | {
        "tools": stored_tools(body.tools),
        "max_turns": INLINE_MAX_TURNS,
        "pipeline": pipeline,
    }


async def _start(
    state: AppState,
    request: Request,
    db,
    agent: Agent,
    connection_type: str,
    config: dict | None = None,
) -> CallOut:
    session = await admission.start_session(
        state,
        db,
        agent,
        connection_type=connection_type,
        live=False,
        inline_config=config,
        voicemail=call_setting(agent.voicemail) if connection_type in CARRIERS else None,
    )
    url, markup = _connection(state, request, session)
    return CallOut(
        session_id=session.id,
        connection_type=connection_type,
        url=url,
        markup=markup,
        session=session_out(state, request, session),
    )


def _connection(state: AppState, request: Request, session: Session) -> tuple[str, str | None]:
    """The URL to connect to, and the carrier markup that connects to it."""
    base = websocket_base(state.settings, request)
    if session.connection_type == "websocket":
        url = session_out(state, request, session).websocket_url
        assert url is not None  # a created session's URL is set
        return url, None
    if session.connection_type == "twilio":
        return f"{base}{twilio.STREAM_PATH}", stream_twiml(state, request, session, None)
    carrier = session.connection_type
    url = f"{base}/v1/sessions/{carrier}/stream?token={quote(issue_relay_token(state.tokens, session, None))}"
    return url, ANSWERS[carrier](url)


@router.post(
    "/v1/calls",
    status_code=201,
    response_model=CallOut,
    summary="Start a call for an agent",
    responses=DRAINING_RESPONSES,
)
@router.post(
    "/v1/calls/create",
    status_code=201,
    response_model=CallOut,
    summary="Start a call (alias)",
    responses=DRAINING_RESPONSES,
)
async def create_call(
    body: CallCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> CallOut:
    agent = await load_agent(db, caller, body.agent_id)
    if body.connection_type == "webrtc":
        admission.check_agent(state, agent)
        url = f"{public_base_url(state.settings, request)}/v1/agents/{agent.id}/webrtc/offer"
        return CallOut(
            session_id=None, connection_type="webrtc", url=url, markup=None, session=None
        )
    return await _start(state, request, db, agent, body.connection_type)


@router.post(
    "/v1/calls/inline",
    status_code=201,
    response_model=CallOut,
    summary="Start a call with an inline agent configuration",
    responses=DRAINING_RESPONSES,
)
async def create_inline_call(
    body: InlineCallCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> CallOut:
    if body.connection_type == "webrtc":
        raise APIError(
            422,
            "unsupported_connection_type",
            "connection_type webrtc needs a stored agent: create one and POST its /v1/agents/{id}/webrtc/offer",
        )
    pipeline = body.pipeline or state.settings.default_pipeline
    check_pipeline_and_voice(state.catalog, pipeline, body.voice_id)
    config = inline_config(body, pipeline)
    check_flow(body.flow, config["tools"])
    agent = inline_agent(caller.account_id, config)
    return await _start(state, request, db, agent, body.connection_type, config)


@router.get(
    "/v1/sessions/{session_id}/recording",
    tags=["sessions"],
    response_class=StreamingResponse,
    summary="A session's recording: stereo WAV, caller left, agent right",
    responses={
        200: {
            "content": {"audio/wav": {}},
            "description": "The recording (so far, on the node running the call)",
        }
    },
)
async def get_recording(
    session_id: str, state: StateDep, db: DbDep, caller: CallerDep
) -> StreamingResponse:
    session = await load_session(db, caller, session_id)
    return await recording_response(state.settings, session, state.node.id)
