"""Liveness and the pipeline catalog."""

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from app.deps import CallerDep, StateDep
from app.errors import ERROR_RESPONSES

router = APIRouter()


class Health(BaseModel):
    status: Literal["ok", "draining"]
    active_calls: int


class PipelineOut(BaseModel):
    name: str
    description: str
    voices: list[str]
    missing_env: list[str]


@router.get("/health", response_model=Health, tags=["health"], summary="Liveness")
async def health(state: StateDep) -> Health:
    return Health(status="draining" if state.draining else "ok", active_calls=len(state.calls))


@router.get(
    "/v1/pipelines", response_model=list[PipelineOut], tags=["pipelines"], responses=ERROR_RESPONSES,
    summary="Pipeline configs and the voices each offers",
)
async def list_pipelines(state: StateDep, caller: CallerDep) -> list[PipelineOut]:
    configs = [state.catalog.get(name) for name in state.catalog.names()]
    return [
        PipelineOut(name=c.name, description=c.description, voices=sorted(c.tts.voices), missing_env=c.missing_env())
        for c in configs
    ]
