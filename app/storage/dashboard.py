"""Queries only the dashboard needs. Every query is scoped to an account."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.models import Agent


async def agent_names(db: AsyncSession, account_id: str) -> dict[str, str]:
    """Every agent's name by id, deleted ones included (their calls stay in the logs)."""
    rows = await db.execute(
        select(Agent.id, Agent.name, Agent.status).where(Agent.account_id == account_id).order_by(Agent.name, Agent.id)
    )
    return {id_: f"{name} (deleted)" if status == "deleted" else name for id_, name, status in rows}
