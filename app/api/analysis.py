"""Post-call analysis of a session, and an agent's webhook deliveries."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from app.agents import load_agent
from app.api.sessions import load_session
from app.calls import post_call
from app.deps import CallerDep, DbDep, StateDep
from app.errors import ERROR_RESPONSES, APIError, ErrorBody
from app.storage import analysis as analysis_store
from app.storage import webhooks as webhook_store
from pipelines.config import PipelineConfigError, UnknownPipelineError

router = APIRouter(tags=["analysis"], responses=ERROR_RESPONSES)


class AnalysisOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    session_id: str
    status: Literal["pending", "completed", "failed"]
    result: dict[str, Any] | None
    """`summary`, `sentiment`, `topics`, `action_items` and the agent's `custom` fields."""
    error: str | None
    attempts: int
    model: str | None
    created_at: datetime
    updated_at: datetime


class WebhookDeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    session_id: str | None
    event: str
    url: str
    payload: dict[str, Any]
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryOut]
    total: int
    limit: int
    offset: int


@router.get(
    "/v1/sessions/{session_id}/analysis",
    response_model=AnalysisOut,
    summary="Get a session's analysis",
)
async def get_analysis(session_id: str, db: DbDep, caller: CallerDep):
    session = await load_session(db, caller, session_id)
    analysis = await analysis_store.get_analysis(db, caller.account_id, session.id)
    if analysis is None:
        raise APIError(
            404, "analysis_not_found", f"session '{session_id}' has no analysis (it has not ended)"
        )
    return analysis


@router.post(
    "/v1/sessions/{session_id}/analysis",
    status_code=202,
    response_model=AnalysisOut,
    summary="Analyse a session again (runs in the background)",
    responses={
        409: {
            "model": ErrorBody,
            "description": "The session has not ended (`session_not_ended`), its "
            "pipeline is gone (`unknown_pipeline`) or does not load (`invalid_pipeline`), or an analysis of it is already pending or running "
            "(`analysis_in_progress`: one at a time per session)",
        }
    },
)
async def rerun_analysis(session_id: str, state: StateDep, db: DbDep, caller: CallerDep):
    session = await load_session(db, caller, session_id)
    if session.status not in ("completed", "failed"):
        raise APIError(
            409,
            "session_not_ended",
            f"session '{session_id}' is {session.status}; analyse it once it has ended",
        )
    try:
        await post_call.analysis_target(state.catalog, state.settings.default_pipeline, db, session)
    except UnknownPipelineError as exc:
        raise APIError(
            409, "unknown_pipeline", f"the agent's pipeline '{exc.name}' no longer exists"
        ) from None
    except PipelineConfigError as exc:
        raise APIError(
            409, "invalid_pipeline", f"the agent's pipeline does not load: {exc}"
        ) from None
    analysis = await analysis_store.rerun_analysis(db, caller.account_id, session.id)
    if analysis is None:
        raise APIError(
            409,
            "analysis_in_progress",
            f"session '{session_id}' is being analysed; wait until it is done",
        )
    post_call.enqueue_analysis(state.jobs, db, session)
    await db.commit()
    return analysis


@router.get(
    "/v1/agents/{agent_id}/webhook-deliveries",
    response_model=WebhookDeliveryList,
    summary="List an agent's webhook deliveries, newest first",
)
async def list_webhook_deliveries(
    agent_id: str,
    db: DbDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict:
    agent = await load_agent(db, caller, agent_id)
    items, total = await webhook_store.list_deliveries(
        db, caller.account_id, agent.id, limit=limit, offset=offset
    )
    return {"items": items, "total": total, "limit": limit, "offset": offset}
