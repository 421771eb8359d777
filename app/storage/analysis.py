"""Post-call analysis and per-session cost rows. Every query is scoped to an account."""

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import utcnow
from app.storage.models import SessionAnalysis, SessionCost


async def get_analysis(
    db: AsyncSession, account_id: str, session_id: str
) -> SessionAnalysis | None:
    return await db.scalar(
        select(SessionAnalysis).where(
            SessionAnalysis.session_id == session_id, SessionAnalysis.account_id == account_id
        )
    )


def start_analysis(db: AsyncSession, account_id: str, session_id: str) -> None:
    """Add a session's first analysis, `pending`, to `db`'s transaction."""
    db.add(
        SessionAnalysis(session_id=session_id, account_id=account_id, status="pending", attempts=0)
    )


async def rerun_analysis(
    db: AsyncSession, account_id: str, session_id: str
) -> SessionAnalysis | None:
    """Mark a session's analysis `pending` again, in `db`'s transaction; None if it already is
    (one analysis in flight per session: of parallel callers, exactly one gets the row)."""
    pending = {
        "status": "pending",
        "result": None,
        "error": None,
        "attempts": 0,
        "updated_at": utcnow(),
    }
    claimed = await db.execute(
        update(SessionAnalysis)
        .where(
            SessionAnalysis.session_id == session_id,
            SessionAnalysis.account_id == account_id,
            SessionAnalysis.status != "pending",
        )
        .values(**pending)
    )
    if claimed.rowcount == 0:  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
        if await get_analysis(db, account_id, session_id) is not None:
            return None  # pending already
        db.add(SessionAnalysis(session_id=session_id, account_id=account_id, **pending))
        try:  # never analysed (it ended before analyses existed, or storing its cost failed)
            await db.flush()
        except IntegrityError:
            await db.rollback()
            return None  # a parallel caller just added it
    return await db.scalar(
        select(SessionAnalysis)
        .where(SessionAnalysis.session_id == session_id)
        .execution_options(populate_existing=True)
    )


async def finish_analysis(
    db: AsyncSession,
    session_id: str,
    *,
    result: dict | None,
    error: str | None,
    attempts: int,
    model: str | None,
) -> None:
    """Store the analysis' outcome in `db`'s transaction."""
    analysis = await db.get_one(SessionAnalysis, session_id)
    analysis.status = "completed" if result is not None else "failed"
    analysis.result, analysis.error, analysis.attempts, analysis.model = (
        result,
        error,
        attempts,
        model,
    )
    analysis.updated_at = utcnow()


def add_cost(db: AsyncSession, account_id: str, session_id: str, cost: dict) -> None:
    db.add(SessionCost(session_id=session_id, account_id=account_id, cost=cost))


async def load_costs(db: AsyncSession, session_ids: list[str]) -> dict[str, dict]:
    """Each session's cost, by session id (sessions still running have none)."""
    if not session_ids:
        return {}
    rows = await db.scalars(select(SessionCost).where(SessionCost.session_id.in_(session_ids)))
    return {row.session_id: row.cost for row in rows}
