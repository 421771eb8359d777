"""Each call's latency record, rewritten after every measurement."""

from datetime import datetime

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.storage.ids import utcnow
from app.storage.models import Base


class SessionLatency(Base):
    __tablename__ = "session_latency"

    session_id: Mapped[str] = mapped_column(String(40), ForeignKey("sessions.id"), primary_key=True)
    record: Mapped[dict]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
