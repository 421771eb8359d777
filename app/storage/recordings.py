"""Each session's recording state: being written, available in the recording store, expired or
skipped; and what an account's available recordings add up to."""

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import utcnow
from app.storage.models import Account, Session


async def usage_and_quota(
    db: AsyncSession, account_id: str, default_quota: int | None
) -> tuple[int, int | None]:
    """Bytes of the account's available recordings, and its cap (None: no cap)."""
    account = await db.get(Account, account_id)
    quota = (
        account.recording_quota_bytes
        if account and account.recording_quota_bytes is not None
        else default_quota
    )
    used = await db.scalar(
        select(func.coalesce(func.sum(Session.recording_bytes), 0)).where(
            Session.account_id == account_id, Session.recording_status == "available"
        )
    )
    return int(used or 0), quota


async def status(db: AsyncSession, session_id: str) -> str | None:
    return await db.scalar(select(Session.recording_status).where(Session.id == session_id))


async def set_status(
    db: AsyncSession, session_id: str, status: str, reason: str | None = None
) -> None:
    await db.execute(
        update(Session)
        .where(Session.id == session_id)
        .values(recording_status=status, recording_reason=reason)
    )
    await db.commit()


async def mark_stored(db: AsyncSession, session_id: str, size: int | None) -> None:
    """A recording being written is now in the store (or, with no size, was never written).
    Only a `recording` session changes, so running this again changes nothing."""
    values = (
        {"recording_status": "available", "recording_bytes": size, "recording_stored_at": utcnow()}
        if size is not None
        else {"recording_status": None}
    )
    await db.execute(
        update(Session)
        .where(Session.id == session_id, Session.recording_status == "recording")
        .values(**values)
    )
    await db.commit()


async def stored_before(db: AsyncSession, cutoff: datetime, limit: int) -> list[str]:
    """Ids of sessions whose available recording was stored before `cutoff`, oldest first."""
    rows = await db.scalars(
        select(Session.id)
        .where(Session.recording_status == "available", Session.recording_stored_at < cutoff)
        .order_by(Session.recording_stored_at)
        .limit(limit)
    )
    return list(rows)


async def mark_expired(db: AsyncSession, session_id: str, reason: str) -> bool:
    """True if this call marked it (another node may have got there first)."""
    result = await db.execute(
        update(Session)
        .where(Session.id == session_id, Session.recording_status == "available")
        .values(recording_status="expired", recording_reason=reason)
    )
    await db.commit()
    return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
