"""Session and transcript queries. Every query is scoped to an account."""

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import utcnow
from app.storage.models import Account, Session, TranscriptEntry

ACTIVE_STATUSES = ("created", "active")
CARRIER_CONNECTIONS = ("twilio", "telnyx", "plivo")
"""Connection types of phone calls: a `created` one is ringing and holds a place under the call cap."""


async def expire_stale(db: AsyncSession) -> None:
    """Sessions nobody connected to before `expires_at` become `expired`."""
    await db.execute(
        update(Session)
        .where(Session.status == "created", Session.expires_at < utcnow())
        .values(status="expired", end_reason="expired")
    )
    await db.commit()


async def get_session(db: AsyncSession, account_id: str, session_id: str) -> Session | None:
    await expire_stale(db)
    return await db.scalar(
        select(Session).where(Session.id == session_id, Session.account_id == account_id)
    )


async def list_sessions(
    db: AsyncSession,
    account_id: str,
    *,
    agent_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Session], int]:
    await expire_stale(db)
    query = select(Session).where(Session.account_id == account_id)
    if agent_id:
        query = query.where(Session.agent_id == agent_id)
    if status:
        query = query.where(Session.status == status)
    total = await db.scalar(select(func.count()).select_from(query.subquery()))
    rows = await db.scalars(
        query.order_by(Session.created_at.desc(), Session.id).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def lock_account(db: AsyncSession, account_id: str) -> int | None:
    """Take the account's row lock until this transaction ends, so admissions to it queue up
    (a row lock on PostgreSQL, the database's write lock on SQLite); the account's own call cap."""
    await db.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(max_concurrent_calls=Account.max_concurrent_calls)
    )
    return await db.scalar(select(Account.max_concurrent_calls).where(Account.id == account_id))


async def count_live(db: AsyncSession, account_id: str, *, besides: str | None = None) -> int:
    """The account's calls that hold a place under its cap: live ones, and carrier calls still
    ringing (created, not yet answered or expired)."""
    ringing = (
        (Session.status == "created")
        & Session.connection_type.in_(CARRIER_CONNECTIONS)
        & (Session.expires_at > utcnow())
    )
    query = (
        select(func.count())
        .select_from(Session)
        .where(Session.account_id == account_id, (Session.status == "active") | ringing)
    )
    if besides:
        query = query.where(Session.id != besides)
    return await db.scalar(query) or 0


async def claim(db: AsyncSession, session: Session, node_id: str) -> bool:
    """Move a `created` session to `active` on node `node_id`; False if another connection got there first."""
    started = utcnow()
    result = await db.execute(
        update(Session)
        .where(Session.id == session.id, Session.status == "created")
        .values(status="active", started_at=started, host=node_id)
    )
    await db.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
        return False
    session.status, session.started_at, session.host = "active", started, node_id
    return True


async def move_to(db: AsyncSession, session: Session, node_id: str) -> bool:
    """An `active` session's call now runs on node `node_id`; False if it is no longer active."""
    result = await db.execute(
        update(Session)
        .where(Session.id == session.id, Session.status == "active")
        .values(host=node_id)
    )
    await db.commit()
    session.host = node_id
    return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult


async def finish(
    db: AsyncSession, session_id: str, *, status: str, end_reason: str, error: str | None
) -> None:
    session = await db.get_one(Session, session_id)
    ended = utcnow()
    session.status = status
    session.end_reason = end_reason
    session.error = error
    session.ended_at = ended
    if session.started_at:
        session.duration_secs = round((ended - session.started_at).total_seconds(), 3)
    await db.commit()


async def add_transcript_entry(
    db: AsyncSession,
    session_id: str,
    *,
    speaker: str,
    content: str,
    timestamp: datetime,
    interrupted: bool = False,
) -> None:
    db.add(
        TranscriptEntry(
            session_id=session_id,
            speaker=speaker,
            content=content,
            timestamp=timestamp,
            interrupted=interrupted,
        )
    )
    await db.commit()


async def save_flow_state(db: AsyncSession, session_id: str, state: dict) -> None:
    """Set a flow call's state (path, collected values, its flow); the caller commits."""
    session = await db.get_one(Session, session_id)
    session.flow_state = state


async def transcript(db: AsyncSession, session_id: str) -> list[TranscriptEntry]:
    rows = await db.scalars(
        select(TranscriptEntry)
        .where(TranscriptEntry.session_id == session_id)
        .order_by(TranscriptEntry.id)
    )
    return list(rows)


async def active_session_ids(db: AsyncSession, agent_id: str) -> list[str]:
    rows = await db.scalars(
        select(Session.id).where(Session.agent_id == agent_id, Session.status.in_(ACTIVE_STATUSES))
    )
    return list(rows)


async def end_unconnected(db: AsyncSession, agent_id: str, reason: str) -> None:
    """Sessions of an agent that nobody has joined yet can no longer be joined."""
    await db.execute(
        update(Session)
        .where(Session.agent_id == agent_id, Session.status == "created")
        .values(status="failed", end_reason=reason, ended_at=utcnow())
    )
    await db.commit()
