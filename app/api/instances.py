"""Agent instances: per-caller variables for an agent's `{{name}}` placeholders.

Pass an instance's id as `instanceId` when starting a phone session or call; the
agent's `system_prompt` and `greeting` are filled from its `variables`.
"""

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.agents import load_agent
from app.deps import CallerDep, DbDep
from app.errors import ERROR_RESPONSES, APIError, not_found
from app.request_body import REQUEST_BODY
from app.storage import telephony as store
from app.storage.ids import new_id
from app.storage.models import AgentInstance

router = APIRouter(
    prefix="/v1/agents/{agent_id}/instances", tags=["agents"], responses=ERROR_RESPONSES
)


class InstanceCreate(BaseModel):
    model_config = REQUEST_BODY

    variables: dict[str, Any] = Field(
        default_factory=dict, max_length=100, description="Values for `{{name}}` placeholders"
    )


class InstanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    variables: dict[str, Any]
    created_at: datetime


class InstanceList(BaseModel):
    items: list[InstanceOut]


async def load_instance(db, caller, agent_id: str, instance_id: str) -> AgentInstance:
    instance = await store.get_instance(db, caller.account_id, agent_id, instance_id)
    if instance is None:
        raise not_found("instance", instance_id)
    return instance


@router.post("", status_code=201, response_model=InstanceOut, summary="Create an agent instance")
async def create_instance(
    agent_id: str, body: InstanceCreate, db: DbDep, caller: CallerDep
) -> AgentInstance:
    agent = await load_agent(db, caller, agent_id)
    if agent.status == "deleted":
        raise APIError(409, "agent_deleted", f"agent '{agent_id}' is deleted")
    instance = AgentInstance(
        id=new_id("inst"), account_id=caller.account_id, agent_id=agent.id, variables=body.variables
    )
    db.add(instance)
    await db.commit()
    return instance


@router.get("", response_model=InstanceList, summary="List an agent's instances")
async def list_instances(agent_id: str, db: DbDep, caller: CallerDep) -> dict:
    await load_agent(db, caller, agent_id)
    return {"items": await store.list_instances(db, caller.account_id, agent_id)}


@router.get("/{instance_id}", response_model=InstanceOut, summary="Get an agent instance")
async def get_instance(
    agent_id: str, instance_id: str, db: DbDep, caller: CallerDep
) -> AgentInstance:
    return await load_instance(db, caller, agent_id, instance_id)


@router.delete("/{instance_id}", response_model=InstanceOut, summary="Delete an agent instance")
async def delete_instance(
    agent_id: str, instance_id: str, db: DbDep, caller: CallerDep
) -> AgentInstance:
    instance = await load_instance(db, caller, agent_id, instance_id)
    await db.delete(instance)
    await db.commit()
    return instance
