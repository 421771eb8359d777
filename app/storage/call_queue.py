"""Queries for the callers waiting for a place under their account's call cap. The callers
who hold their place in line are those `waiting` until their deadline and those `offered` a
place until the offer lapses."""

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import utcnow
from app.storage.models import CallWait


def _in_line():
    now = utcnow()
    return ((CallWait.status == "waiting") & (CallWait.deadline > now)) | (
        (CallWait.status == "offered") & (CallWait.offered_until > now)
    )


async def count_ahead(db: AsyncSession, account_id: str, before: CallWait | None = None) -> int:
    """The account's callers in line (ahead of `before`, if given)."""
    query = (
        select(func.count())
        .select_from(CallWait)
        .where(CallWait.account_id == account_id, _in_line())
    )
    if before is not None:
        query = query.where(CallWait.seq < before.seq)
    return await db.scalar(query) or 0


async def count_offered(db: AsyncSession, account_id: str) -> int:
    """The account's callers holding an offered place."""
    return (
        await db.scalar(
            select(func.count())
            .select_from(CallWait)
            .where(
                CallWait.account_id == account_id,
                CallWait.status == "offered",
                CallWait.offered_until > utcnow(),
            )
        )
        or 0
    )


async def next_seq(db: AsyncSession, account_id: str) -> int:
    """The place after the account's last caller (under the account's lock)."""
    last = await db.scalar(select(func.max(CallWait.seq)).where(CallWait.account_id == account_id))
    return (last or 0) + 1


async def front(db: AsyncSession, account_id: str, limit: int) -> list[CallWait]:
    """The first `limit` callers still waiting, in arrival order."""
    rows = await db.scalars(
        select(CallWait)
        .where(
            CallWait.account_id == account_id,
            CallWait.status == "waiting",
            CallWait.deadline > utcnow(),
        )
        .order_by(CallWait.seq)
        .limit(limit)
    )
    return list(rows)


async def latest_for_call(db: AsyncSession, call_sid: str) -> str | None:
    """The id of the call's latest place in a line, if it ever waited."""
    return await db.scalar(
        select(CallWait.id)
        .where(CallWait.call_sid == call_sid)
        .order_by(CallWait.enqueued_at.desc())
        .limit(1)
    )


async def drop_lapsed_offers(db: AsyncSession, account_id: str) -> None:
    """Offers the carrier never took up (the caller went): the caller has left the line."""
    await db.execute(
        update(CallWait)
        .where(
            CallWait.account_id == account_id,
            CallWait.status == "offered",
            CallWait.offered_until <= utcnow(),
        )
        .values(status="abandoned")
    )


async def settle(
    db: AsyncSession, wait_id: str, status: str, *, unless: tuple[str, ...], **values
) -> bool:
    """Move the caller to `status` (and set `values`) unless it already is in one of `unless`;
    the caller commits. False if it was."""
    result = await db.execute(
        update(CallWait)
        .where(CallWait.id == wait_id, CallWait.status.not_in(unless))
        .values(status=status, updated_at=utcnow(), **values)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
