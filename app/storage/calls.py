"""Queries for the Calls API: inline calls' agents, resuming dropped WebSocket sessions."""

from datetime import datetime

from sqlalchemy import inspect, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage import agents as agent_store
from app.storage import sessions as session_store
from app.storage.ids import utcnow
from app.storage.models import Agent, Session

INLINE_AGENT_NAME = "inline"
AGENT_COLUMNS = {attr.key for attr in inspect(Agent).column_attrs}


def inline_agent(account_id: str, config: dict) -> Agent:
    """The transient (never saved) agent an inline call's configuration describes."""
    columns = {key: value for key, value in config.items() if key in AGENT_COLUMNS}
    return Agent(id=None, account_id=account_id, name=INLINE_AGENT_NAME, status="active", **columns)


async def call_agent(db: AsyncSession, session: Session) -> Agent | None:
    """The agent a session runs: its stored agent (scoped by account), or its inline one."""
    if session.inline_config is not None:
        return inline_agent(session.account_id, session.inline_config)
    if session.agent_id is None:
        return None
    return await agent_store.get_agent(db, session.account_id, session.agent_id)


async def suspend(db: AsyncSession, session_id: str, deadline: datetime) -> None:
    """The client dropped: the session waits, still active, for a reconnect until `deadline`."""
    await db.execute(
        update(Session).where(Session.id == session_id).values(resume_deadline=deadline)
    )
    await db.commit()


def can_resume(session: Session) -> bool:
    return (
        session.status == "active"
        and session.resume_deadline is not None
        and session.resume_deadline > utcnow()
    )


async def resume(db: AsyncSession, session: Session, host: str | None) -> bool:
    """Take a waiting session for a reconnecting client; False if it can't be (anymore)."""
    result = await db.execute(
        update(Session)
        .where(
            Session.id == session.id, Session.status == "active", Session.resume_deadline > utcnow()
        )
        .values(resume_deadline=None, host=host)
    )
    await db.commit()
    session.resume_deadline, session.host = None, host
    return result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult


async def fail_unresumed(db: AsyncSession, session_id: str) -> bool:
    """Nobody reconnected in time: the session ends `failed` / `disconnected`. False if it was resumed."""
    result = await db.execute(
        update(Session)
        .where(
            Session.id == session_id,
            Session.status == "active",
            Session.resume_deadline.is_not(None),
        )
        .values(resume_deadline=None)
    )
    await db.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
        return False
    await session_store.finish(
        db, session_id, status="failed", end_reason="disconnected", error=None
    )
    return True


async def history(db: AsyncSession, session_id: str) -> list[dict]:
    """The conversation so far as LLM messages, from the stored transcript."""
    roles = {"USER": "user", "AGENT": "assistant"}
    return [
        {"role": roles[entry.speaker], "content": entry.content}
        for entry in await session_store.transcript(db, session_id)
        if entry.speaker in roles
    ]
