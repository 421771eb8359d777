"""Warm transfers' rows: the human's leg of a live call, which any node's Twilio callback may update.

Moves between statuses are compare-and-set, so an answer racing a timeout (or a hang-up)
has exactly one winner.
"""

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import new_id, utcnow
from app.storage.models import CallTransfer


async def create(db: AsyncSession, **fields) -> CallTransfer:
    """A new transfer, `dialing`, with `fields` (see :class:`CallTransfer`)."""
    transfer = CallTransfer(id=new_id("xfr"), status="dialing", **fields)
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


async def move(
    db: AsyncSession,
    transfer_id: str,
    status: str,
    error: str | None = None,
    *,
    from_status: str = "dialing",
) -> bool:
    """Move a transfer from `from_status` to `status`; False if it wasn't (any more) in `from_status`."""
    result = await db.execute(
        update(CallTransfer)
        .where(CallTransfer.id == transfer_id, CallTransfer.status == from_status)
        .values(status=status, error=error, updated_at=utcnow())
    )
    await db.commit()
    return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
