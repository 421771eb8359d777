"""Agent queries. Every query is scoped to an account."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.models import Agent


async def get_agent(db: AsyncSession, account_id: str, agent_id: str) -> Agent | None:
    return await db.scalar(
        select(Agent).where(Agent.id == agent_id, Agent.account_id == account_id)
    )


async def list_agents(
    db: AsyncSession, account_id: str, *, status: str | None, limit: int, offset: int
) -> tuple[list[Agent], int]:
    query = select(Agent).where(Agent.account_id == account_id)
    query = (
        query.where(Agent.status == status) if status else query.where(Agent.status != "deleted")
    )
    total = await db.scalar(select(func.count()).select_from(query.subquery()))
    rows = await db.scalars(
        query.order_by(Agent.created_at.desc(), Agent.id).limit(limit).offset(offset)
    )
    return list(rows), total or 0
