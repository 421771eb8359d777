"""Sessions: start one for an agent, list and read them, read their transcripts."""

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from app.agents import load_agent
from app.calls import admission
from app.calls.latency import summarize
from app.calls.tokens import TokenSigner
from app.cost import SessionCostOut
from app.deps import CallerDep, DbDep, KeyOrLoginCallerDep, StateDep
from app.errors import DRAINING_RESPONSES, ERROR_RESPONSES, not_found
from app.request_body import REQUEST_BODY
from app.state import AppState
from app.storage import analysis as analysis_store
from app.storage import latency as latency_store
from app.storage import sessions as session_store
from app.storage.models import Session
from app.urls import websocket_base

router = APIRouter(tags=["sessions"], responses=ERROR_RESPONSES)

SessionStatus = Literal["created", "active", "completed", "failed", "expired"]


class SessionCreate(BaseModel):
    model_config = REQUEST_BODY

    metadata: dict[str, Any] = Field(default_factory=dict)
    initial_message: str | None = Field(
        default=None,
        max_length=2000,
        description="What the agent says first; overrides its greeting",
    )


class RecordingOut(BaseModel):
    status: Literal["recording", "available", "expired", "skipped"] = Field(
        description="`recording`: the call is writing it; `available`: stored, `GET /v1/sessions/{id}/recording`; "
        "`expired`: deleted after the retention period; `skipped`: not recorded (see `reason`)"
    )
    size_bytes: int | None
    stored_at: datetime | None
    expires_at: datetime | None = Field(
        description="When the retention period deletes it (null: kept)"
    )
    reason: str | None = Field(description="Why it was not recorded or is gone")


class FlowStateOut(BaseModel):
    path: list[str] = Field(
        description="The nodes the call entered, in order (the last: where it is)"
    )
    values: dict[str, Any] = Field(description="What the flow's tool calls collected")


class SessionOut(BaseModel):
    session_id: str
    agent_id: str | None = Field(description="null for an inline call (POST /v1/calls/inline)")
    status: SessionStatus
    connection_type: str
    websocket_url: str | None = Field(
        description="Where a client joins; null once the session can't be joined"
    )
    metadata: dict[str, Any]
    initial_message: str | None
    created_at: datetime
    expires_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_secs: float | None
    end_reason: str | None
    error: str | None
    resumable_until: datetime | None = Field(
        default=None,
        description="Set while the session's client has dropped: reconnect to its websocket_url by then",
    )
    latency: dict[str, Any] | None = Field(
        default=None,
        description="Greeting latency, per-turn voice-to-voice and its parts in order, p50/p90, "
        "barge-in stops; turns and barge-ins carry `at`, when they began (Unix seconds)",
    )
    cost: SessionCostOut | None = Field(
        default=None,
        description="Once ended: `total` (USD) and a `breakdown` per stage/provider/model with its usage and amount",
    )
    recording: RecordingOut | None = Field(
        default=None, description="The call's recording; null if not recorded"
    )
    flow: FlowStateOut | None = Field(
        default=None, description="A conversation flow's state; null if the agent has no flow"
    )


class SessionList(BaseModel):
    items: list[SessionOut]
    total: int
    limit: int
    offset: int


class TranscriptEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    speaker: Literal["USER", "AGENT", "TOOL", "SYSTEM"]
    """TOOL entries hold a JSON object: the tool call's `call_id`, `name`, `arguments` and
    `result`; SYSTEM entries mark a conversation flow's node changes: `{"node": ...}`."""
    content: str
    timestamp: datetime
    interrupted: bool


class Transcript(BaseModel):
    session_id: str
    items: list[TranscriptEntryOut]


def session_token(tokens: TokenSigner, session: Session) -> str:
    return tokens.issue(
        "session", {"sid": session.id, "acc": session.account_id}, session.expires_at.timestamp()
    )


def session_out(
    state: AppState,
    request: Request,
    session: Session,
    latency: dict | None = None,
    cost: dict | None = None,
) -> SessionOut:
    url = None
    joinable = session.status == "created" or session.resume_deadline is not None
    if joinable and session.connection_type == "websocket":
        url = f"{websocket_base(state.settings, request)}/v1/sessions/{session.id}/ws?token={session_token(state.tokens, session)}"
    return SessionOut(
        session_id=session.id,
        agent_id=session.agent_id,
        status=session.status,
        connection_type=session.connection_type,
        websocket_url=url,
        metadata=session.session_metadata,
        initial_message=session.initial_message,
        created_at=session.created_at,
        expires_at=session.expires_at,
        started_at=session.started_at,
        ended_at=session.ended_at,
        duration_secs=session.duration_secs,
        end_reason=session.end_reason,
        error=session.error,
        resumable_until=session.resume_deadline,
        latency=summarize(latency) if latency else None,
        cost=cost,
        recording=recording_out(state, session),
        flow=FlowStateOut.model_validate(session.flow_state) if session.flow_state else None,
    )


def recording_out(state: AppState, session: Session) -> RecordingOut | None:
    if session.recording_status is None:
        return None
    retention = state.settings.recording_retention_days
    expires = (
        session.recording_stored_at + timedelta(days=retention)
        if retention is not None
        and session.recording_stored_at
        and session.recording_status == "available"
        else None
    )
    return RecordingOut(
        status=session.recording_status,
        size_bytes=session.recording_bytes,
        stored_at=session.recording_stored_at,
        expires_at=expires,
        reason=session.recording_reason,
    )


@router.post(
    "/v1/agents/{agent_id}/sessions",
    status_code=201,
    response_model=SessionOut,
    summary="Start a session",
    responses=DRAINING_RESPONSES,
)
async def create_session(
    agent_id: str,
    request: Request,
    state: StateDep,
    db: DbDep,
    caller: CallerDep,
    body: Annotated[SessionCreate | None, Body()] = None,
) -> SessionOut:
    body = body or SessionCreate()
    agent = await load_agent(db, caller, agent_id)
    session = await admission.start_session(
        state,
        db,
        agent,
        connection_type="websocket",
        live=False,
        metadata=body.metadata,
        initial_message=body.initial_message,
    )
    return session_out(state, request, session)


@router.get("/v1/sessions", response_model=SessionList, summary="List sessions")
async def list_sessions(
    request: Request,
    state: StateDep,
    db: DbDep,
    caller: CallerDep,
    agent_id: str | None = None,
    status: SessionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    items, total = await session_store.list_sessions(
        db, caller.account_id, agent_id=agent_id, status=status, limit=limit, offset=offset
    )
    latencies = await latency_store.load(db, [s.id for s in items])
    costs = await analysis_store.load_costs(db, [s.id for s in items])
    return {
        "items": [
            session_out(state, request, s, latencies.get(s.id), costs.get(s.id)) for s in items
        ],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


async def load_session(db, caller, session_id: str) -> Session:
    session = await session_store.get_session(db, caller.account_id, session_id)
    if session is None:
        raise not_found("session", session_id)
    return session


@router.get("/v1/sessions/{session_id}", response_model=SessionOut, summary="Get a session")
async def get_session(
    session_id: str, request: Request, state: StateDep, db: DbDep, caller: KeyOrLoginCallerDep
) -> SessionOut:
    session = await load_session(db, caller, session_id)
    latencies = await latency_store.load(db, [session.id])
    costs = await analysis_store.load_costs(db, [session.id])
    return session_out(state, request, session, latencies.get(session.id), costs.get(session.id))


@router.get(
    "/v1/sessions/{session_id}/transcript",
    response_model=Transcript,
    summary="Get a session's transcript",
)
async def get_transcript(session_id: str, db: DbDep, caller: CallerDep) -> dict:
    session = await load_session(db, caller, session_id)
    return {"session_id": session.id, "items": await session_store.transcript(db, session.id)}
