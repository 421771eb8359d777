"""Eval runs and suites, always read within their account."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.models import EvalRun, EvalSuite


async def get_run(db: AsyncSession, account_id: str, run_id: str) -> EvalRun | None:
    return await db.scalar(
        select(EvalRun).where(EvalRun.id == run_id, EvalRun.account_id == account_id)
    )


async def list_runs(db: AsyncSession, account_id: str, agent_id: str, limit: int) -> list[EvalRun]:
    """An agent's runs, newest first."""
    return list(
        await db.scalars(
            select(EvalRun)
            .where(EvalRun.account_id == account_id, EvalRun.agent_id == agent_id)
            .order_by(EvalRun.created_at.desc(), EvalRun.id.desc())
            .limit(limit)
        )
    )


async def get_suite(db: AsyncSession, account_id: str, agent_id: str) -> EvalSuite | None:
    return await db.scalar(
        select(EvalSuite).where(EvalSuite.agent_id == agent_id, EvalSuite.account_id == account_id)
    )
