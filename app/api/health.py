"""Liveness (and what a load balancer routes on) and the pipeline catalog."""

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app import flows
from app.calls.admission import busy_refusal
from app.deps import CallerDep, StateDep
from app.errors import ERROR_RESPONSES
from pipelines import registry
from pipelines.config import PipelineConfigError

router = APIRouter()


class Health(BaseModel):
    """What a load balancer needs to route to and drain this node."""

    status: Literal["ok", "draining"] = Field(
        description="`draining` after SIGTERM: live calls go on, new ones are refused"
    )
    node_id: str = Field(description="This server process's node id (each worker is a node)")
    live_calls: int = Field(description="Calls running on this node")
    load: float = Field(
        ge=0,
        le=1,
        description="How busy this node was over its last heartbeat: its event loop's CPU share of "
        "a core or the process's share of the machine, whichever is higher",
    )
    accepting: bool = Field(
        description="False while the node drains, holds `SWITCHBOARD_MAX_CALLS_PER_WORKER` calls or "
        "is above `SWITCHBOARD_LOAD_THRESHOLD`: new calls would be refused (503 `server_busy`)"
    )


class PipelineOut(BaseModel):
    name: str
    description: str
    voices: list[str]
    missing_env: list[str]
    error: str | None = Field(
        default=None,
        description="Why the config file does not load (its calls are refused); null when it does",
    )


@router.get(
    "/health",
    response_model=Health,
    tags=["health"],
    summary="Liveness, drain state and load of this node",
)
async def health(state: StateDep) -> Health:
    return Health(
        status="draining" if state.draining else "ok",
        node_id=state.node.id,
        live_calls=len(state.calls),
        load=state.node.load,
        accepting=not state.draining and busy_refusal(state) is None,
    )


@router.get(
    "/v1/pipelines",
    response_model=list[PipelineOut],
    tags=["pipelines"],
    responses=ERROR_RESPONSES,
    summary="Pipeline configs and the voices each offers",
)
async def list_pipelines(state: StateDep, caller: CallerDep) -> list[PipelineOut]:
    return [
        PipelineOut(name=name, description="", voices=[], missing_env=[], error=str(c))
        if isinstance(c, PipelineConfigError)
        else PipelineOut(
            name=name,
            description=c.description,
            voices=sorted(c.voices),
            missing_env=c.missing_env(),
        )
        for name, c in state.catalog.load_all().items()
    ]


@router.get(
    "/v1/pipelines/schema",
    tags=["pipelines"],
    summary="JSON Schema of pipeline config files (for editors' completion and checks)",
    response_description="A JSON Schema (draft 2020-12), with the processors installed on this server",
)
async def pipeline_schema() -> dict[str, Any]:
    return registry.json_schema()


@router.get(
    "/v1/flows/schema",
    tags=["agents"],
    summary="JSON Schema of an agent's conversation flow (Pipecat's flow config)",
    response_description="A JSON Schema (draft 2020-12)",
)
async def flow_schema() -> dict[str, Any]:
    return flows.flow_schema()
