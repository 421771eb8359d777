"""Queries only the dashboard needs: agent names (scoped to an account) and log-ins."""

import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.accounts import hash_key
from app.storage.ids import utcnow
from app.storage.models import Agent, ApiKey, DashboardSession


async def agent_names(db: AsyncSession, account_id: str) -> dict[str, str]:
    """Every agent's name by id, deleted ones included (their calls stay in the logs)."""
    rows = await db.execute(
        select(Agent.id, Agent.name, Agent.status)
        .where(Agent.account_id == account_id)
        .order_by(Agent.name, Agent.id)
    )
    return {id_: f"{name} (deleted)" if status == "deleted" else name for id_, name, status in rows}


async def start_login(db: AsyncSession, key_id: str, account_id: str, ttl_secs: int) -> str:
    """A new log-in with the key `key_id`: the random session id for the cookie (only its hash is stored).
    Expired log-ins are cleared on the way."""
    now = utcnow()
    await db.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    session_id = secrets.token_urlsafe(32)
    db.add(
        DashboardSession(
            id_hash=hash_key(session_id),
            account_id=account_id,
            key_id=key_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_secs),
        )
    )
    await db.commit()
    return session_id


async def login_key(db: AsyncSession, session_id: str) -> ApiKey | None:
    """The key a log-in was made with; None once it expired or was logged out, or the key was revoked."""
    login = await db.get(DashboardSession, hash_key(session_id))
    if login is None or login.expires_at <= utcnow():
        return None
    key = await db.get(ApiKey, login.key_id)
    return key if key is not None and key.revoked_at is None else None


async def end_login(db: AsyncSession, session_id: str) -> None:
    await db.execute(
        delete(DashboardSession).where(DashboardSession.id_hash == hash_key(session_id))
    )
    await db.commit()
