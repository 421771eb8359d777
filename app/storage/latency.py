"""Each call's latency record, rewritten after every measurement."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.models import SessionLatency


async def save(db: AsyncSession, session_id: str, record: dict) -> None:
    row = await db.get(SessionLatency, session_id)
    if row is None:
        db.add(SessionLatency(session_id=session_id, record=record))
    else:
        row.record = dict(record)
    await db.commit()


async def load(db: AsyncSession, session_ids: list[str]) -> dict[str, dict]:
    rows = await db.scalars(
        select(SessionLatency).where(SessionLatency.session_id.in_(session_ids))
    )
    return {row.session_id: row.record for row in rows}
