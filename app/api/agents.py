"""Agents: create, list, read, update, delete (the fields and rules: :mod:`app.agents`)."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app import agents
from app.agents import AgentCreate, AgentOut, AgentUpdate, agent_out, load_agent
from app.deps import CallerDep, DbDep, StateDep
from app.errors import ERROR_RESPONSES, APIError
from app.storage import agents as agent_store
from app.storage.ids import utcnow

router = APIRouter(prefix="/v1/agents", tags=["agents"], responses=ERROR_RESPONSES)


class AgentList(BaseModel):
    items: list[AgentOut]
    total: int
    limit: int
    offset: int


@router.post("", status_code=201, response_model=AgentOut, summary="Create an agent")
@router.post("/create", status_code=201, response_model=AgentOut, summary="Create an agent (alias)")
async def create_agent(
    body: AgentCreate, state: StateDep, db: DbDep, caller: CallerDep
) -> AgentOut:
    """The response is the one place the generated secrets (webhook, webhook tools) are shown in full."""
    agent = await agents.create_agent(
        db, state.catalog, state.settings.default_pipeline, caller.account_id, body
    )
    return agent_out(agent, agents.secrets_of(agent))


@router.get("", response_model=AgentList, summary="List agents")
async def list_agents(
    db: DbDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    status: Literal["active", "paused", "deleted"] | None = None,
) -> dict:
    items, total = await agent_store.list_agents(
        db, caller.account_id, status=status, limit=limit, offset=offset
    )
    return {
        "items": [agent_out(agent) for agent in items],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{agent_id}", response_model=AgentOut, summary="Get an agent")
async def get_agent(agent_id: str, db: DbDep, caller: CallerDep) -> AgentOut:
    return agent_out(await load_agent(db, caller, agent_id))


@router.patch("/{agent_id}", response_model=AgentOut, summary="Update an agent")
async def update_agent(
    agent_id: str, body: AgentUpdate, state: StateDep, db: DbDep, caller: CallerDep
) -> AgentOut:
    """The response shows in full only the secrets this update set."""
    agent = await load_agent(db, caller, agent_id)
    return agent_out(agent, await agents.update_agent(db, state.catalog, agent, body))


@router.post(
    "/{agent_id}/webhook-secret/rotate",
    response_model=AgentOut,
    summary="Replace the agent's webhook secret",
)
async def rotate_webhook_secret(agent_id: str, db: DbDep, caller: CallerDep) -> AgentOut:
    """A new webhook secret, shown in full in this response only; the next delivery is signed with it."""
    agent = await load_agent(db, caller, agent_id)
    if agent.status == "deleted":
        raise APIError(409, "agent_deleted", f"agent '{agent_id}' is deleted and cannot be changed")
    if not agent.webhook_url:
        raise APIError(
            409, "no_webhook", f"agent '{agent_id}' has no webhook_url, so no webhook secret"
        )
    agent.webhook_secret = agents.new_secret()
    agent.updated_at = utcnow()
    await db.commit()
    return agent_out(agent, {agent.webhook_secret})


@router.delete(
    "/{agent_id}", response_model=AgentOut, summary="Delete an agent and end its live sessions"
)
async def delete_agent(agent_id: str, state: StateDep, db: DbDep, caller: CallerDep) -> AgentOut:
    """Its phone numbers are freed for other agents."""
    agent = await load_agent(db, caller, agent_id)
    await agents.delete_agent(db, state.control, agent)
    return agent_out(agent)
