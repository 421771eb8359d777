"""Post-call analysis and per-session cost rows. Every query is scoped to an account."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import utcnow
from app.storage.models import SessionAnalysis, SessionCost


async def get_analysis(db: AsyncSession, account_id: str, session_id: str) -> SessionAnalysis | None:
    return await db.scalar(
        select(SessionAnalysis).where(SessionAnalysis.session_id == session_id, SessionAnalysis.account_id == account_id)
    )


async def start_analysis(db: AsyncSession, account_id: str, session_id: str) -> SessionAnalysis:
    """Mark a session's analysis `pending` (a new row, or a rerun of an old one)."""
    analysis = await get_analysis(db, account_id, session_id)
    if analysis is None:
        analysis = SessionAnalysis(session_id=session_id, account_id=account_id, attempts=0)
        db.add(analysis)
    analysis.status, analysis.result, analysis.error, analysis.attempts = "pending", None, None, 0
    analysis.updated_at = utcnow()
    await db.commit()
    return analysis


async def finish_analysis(
    db: AsyncSession, session_id: str, *, result: dict | None, error: str | None, attempts: int, model: str | None
) -> None:
    analysis = await db.get(SessionAnalysis, session_id)
    analysis.status = "completed" if result is not None else "failed"
    analysis.result, analysis.error, analysis.attempts, analysis.model = result, error, attempts, model
    analysis.updated_at = utcnow()
    await db.commit()


async def save_cost(db: AsyncSession, account_id: str, session_id: str, cost: dict) -> None:
    db.add(SessionCost(session_id=session_id, account_id=account_id, cost=cost))
    await db.commit()


async def load_costs(db: AsyncSession, session_ids: list[str]) -> dict[str, dict]:
    """Each session's cost, by session id (sessions still running have none)."""
    if not session_ids:
        return {}
    rows = await db.scalars(select(SessionCost).where(SessionCost.session_id.in_(session_ids)))
    return {row.session_id: row.cost for row in rows}
