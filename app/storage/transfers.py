"""Warm transfers' rows: the human's leg of a live call, which any node's Twilio callback may update.

Moves out of `dialing` are compare-and-set, so an answer racing a timeout (or a hang-up)
has exactly one winner.
"""

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import new_id, utcnow
from app.storage.models import CallTransfer


async def create(
    db: AsyncSession, *, account_id: str, session_id: str, to_number: str, summary: str
) -> CallTransfer:
    transfer = CallTransfer(
        id=new_id("xfr"),
        account_id=account_id,
        session_id=session_id,
        to_number=to_number,
        summary=summary,
        status="dialing",
    )
    db.add(transfer)
    await db.commit()
    return transfer


async def get(db: AsyncSession, transfer_id: str) -> CallTransfer | None:
    return await db.get(CallTransfer, transfer_id, populate_existing=True)


async def set_call_sid(db: AsyncSession, transfer_id: str, call_sid: str) -> None:
    await db.execute(
        update(CallTransfer)
        .where(CallTransfer.id == transfer_id, CallTransfer.call_sid.is_(None))
        .values(call_sid=call_sid, updated_at=utcnow())
    )
    await db.commit()


async def leave_dialing(
    db: AsyncSession, transfer_id: str, status: str, error: str | None = None
) -> bool:
    """Move a dialing transfer to `status` (`answered`, `failed`, `cancelled`); False if it
    had already left `dialing`."""
    result = await db.execute(
        update(CallTransfer)
        .where(CallTransfer.id == transfer_id, CallTransfer.status == "dialing")
        .values(status=status, error=error, updated_at=utcnow())
    )
    await db.commit()
    return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
