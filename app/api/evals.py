"""The Evals API: run scenario files against an agent in the background and read the results
(see :mod:`app.evals.background`)."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.agents import load_agent
from app.deps import CallerDep, DbDep, StateDep
from app.errors import ERROR_RESPONSES, not_found
from app.evals import background
from app.request_body import REQUEST_BODY, WHOLE_NUMBER
from app.storage import evals as store
from app.storage.ids import utcnow
from app.storage.models import EvalRun, EvalSuite

router = APIRouter(tags=["evals"], responses=ERROR_RESPONSES)


ScenarioFiles = Annotated[
    list[str],
    Field(
        min_length=1,
        max_length=background.MAX_DOCUMENTS,
        description="Scenario files (Pipecat's evals format with a `switchboard:` block), as YAML text",
    ),
]
ScenarioName = Annotated[str, Field(min_length=1, max_length=200)]


class EvalSuiteIn(BaseModel):
    model_config = REQUEST_BODY

    scenarios: ScenarioFiles


class EvalSuiteOut(BaseModel):
    agent_id: str
    names: list[str] = Field(description="The scenarios the files hold (`file name/scenario name`)")
    scenarios: list[str]
    updated_at: datetime


class EvalRunCreate(BaseModel):
    model_config = REQUEST_BODY

    scenarios: ScenarioFiles | None = Field(
        default=None, description="Scenario files to run; the agent's stored suite if left out"
    )
    names: list[ScenarioName] | None = Field(
        default=None,
        max_length=background.MAX_CALLS,
        description="Run only these scenarios of the files, by name (`file name/scenario name`)",
    )
    transport: Literal["ws", "twilio"] = Field(
        default="ws", description="ws: the session WebSocket; twilio: a Twilio Media Streams call"
    )
    text: bool = Field(default=False, description="Send the caller's turns as text (ws only)")
    repeat: Annotated[int, Field(ge=1, le=10), WHOLE_NUMBER] = Field(
        default=1, description="Runs of every scenario"
    )


class EvalTurnOut(BaseModel):
    user: str | None = Field(description="What the caller said (null: the agent spoke first)")
    heard: str = Field(description="The agent's reply as the caller heard it (Whisper)")
    latency_ms: int | None = Field(description="Voice-to-voice: caller end of speech → agent audio")


class EvalScenarioOut(BaseModel):
    name: str
    kind: Literal["script", "simulation"]
    passed: bool
    reason: str = Field(description="The first failure, empty if it passed")
    failures: list[str]
    turns: list[EvalTurnOut]
    session_id: str | None
    recording_url: str | None = Field(description="The eval call's recording (stereo WAV)")
    end_reason: str | None
    cost_usd: float | None
    p50_voice_to_voice_ms: int | None
    transcript: list[dict[str, Any]] = Field(description="The server's transcript of the call")
    duration_s: float


class EvalRunOut(BaseModel):
    id: str
    agent_id: str
    status: Literal["pending", "running", "completed", "failed"]
    transport: str
    text: bool
    repeat: int
    total: int = Field(description="Calls the run makes")
    done: int = Field(description="Calls finished")
    passed: bool | None = Field(description="Every call passed (null until completed)")
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    results: list[EvalScenarioOut]


class EvalRunList(BaseModel):
    items: list[EvalRunOut]


def run_out(run: EvalRun) -> EvalRunOut:
    results = [
        EvalScenarioOut(
            **{k: v for k, v in result.items() if k in EvalScenarioOut.model_fields},
            recording_url=f"/v1/sessions/{result['session_id']}/recording"
            if result.get("session_id")
            else None,
        )
        for result in run.results
    ]
    return EvalRunOut(
        id=run.id,
        agent_id=run.agent_id,
        status=run.status,
        transport=run.transport,
        text=run.text,
        repeat=run.repeat,
        total=run.total,
        done=len(results),
        passed=all(r.passed for r in results) if run.status == "completed" else None,
        error=run.error,
        created_at=run.created_at,
        finished_at=run.finished_at,
        results=results,
    )


@router.post("/v1/agents/{agent_id}/evals", status_code=202, response_model=EvalRunOut)
async def start_eval(
    agent_id: str, body: EvalRunCreate, caller: CallerDep, db: DbDep, state: StateDep
) -> EvalRunOut:
    """Run scenario files against the agent in the background; poll `GET /v1/evals/{id}`."""
    agent = await load_agent(db, caller, agent_id)
    documents = body.scenarios
    if documents is None:
        suite = await store.get_suite(db, caller.account_id, agent.id)
        if suite is None:
            raise not_found("eval_suite", agent.id)
        documents = suite.documents
    run = await background.start(
        state, db, agent, documents, body.names, body.transport, body.text, body.repeat
    )
    return run_out(run)


def suite_out(suite: EvalSuite) -> EvalSuiteOut:
    return EvalSuiteOut(
        agent_id=suite.agent_id,
        names=[s.name for s in background.parse_documents(suite.documents)],
        scenarios=suite.documents,
        updated_at=suite.updated_at,
    )


@router.put("/v1/agents/{agent_id}/eval-suite", response_model=EvalSuiteOut)
async def put_suite(agent_id: str, body: EvalSuiteIn, caller: CallerDep, db: DbDep) -> EvalSuiteOut:
    """Store the agent's scenario files (replacing any), for runs that name them."""
    agent = await load_agent(db, caller, agent_id)
    background.check(body.scenarios)
    suite = await store.get_suite(db, caller.account_id, agent.id)
    if suite is None:
        suite = EvalSuite(agent_id=agent.id, account_id=caller.account_id, documents=[])
        db.add(suite)
    suite.documents, suite.updated_at = body.scenarios, utcnow()
    await db.commit()
    return suite_out(suite)


@router.get("/v1/agents/{agent_id}/eval-suite", response_model=EvalSuiteOut)
async def get_suite(agent_id: str, caller: CallerDep, db: DbDep) -> EvalSuiteOut:
    agent = await load_agent(db, caller, agent_id)
    suite = await store.get_suite(db, caller.account_id, agent.id)
    if suite is None:
        raise not_found("eval_suite", agent.id)
    return suite_out(suite)


@router.get("/v1/evals/{eval_id}", response_model=EvalRunOut)
async def get_eval(eval_id: str, caller: CallerDep, db: DbDep) -> EvalRunOut:
    run = await store.get_run(db, caller.account_id, eval_id)
    if run is None:
        raise not_found("eval", eval_id)
    return run_out(run)


@router.get("/v1/agents/{agent_id}/evals", response_model=EvalRunList)
async def list_evals(
    agent_id: str, caller: CallerDep, db: DbDep, limit: int = Query(default=20, ge=1, le=100)
) -> EvalRunList:
    """The agent's eval runs, newest first."""
    agent = await load_agent(db, caller, agent_id)
    runs = await store.list_runs(db, caller.account_id, agent.id, limit)
    return EvalRunList(items=[run_out(run) for run in runs])
