"""What the analytics read: an account's calls created in a time window, with their latency
records and costs, and the failures among them. Every query is scoped to an account."""

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.models import Session, SessionCost, SessionLatency, WebhookDelivery

FAILED = (Session.status == "failed") | (Session.end_reason == "provider_error")
"""A call that failed: it ended `failed` (an error, a dropped connection) or on a provider's failure."""


def _in_window(
    query: Select, account_id: str, start: datetime, end: datetime, agent_id: str | None
) -> Select:
    query = query.where(
        Session.account_id == account_id, Session.created_at >= start, Session.created_at < end
    )
    return query.where(Session.agent_id == agent_id) if agent_id else query


async def calls(
    db: AsyncSession, account_id: str, start: datetime, end: datetime, agent_id: str | None
) -> list[tuple[datetime, bool, str | None]]:
    """Each call's `(created_at, whether it failed, end_reason)`."""
    query = select(Session.created_at, FAILED, Session.end_reason)
    rows = await db.execute(_in_window(query, account_id, start, end, agent_id))
    return [(created, bool(failed), reason) for created, failed, reason in rows]


async def latencies(
    db: AsyncSession, account_id: str, start: datetime, end: datetime, agent_id: str | None
) -> list[tuple[datetime, dict[str, Any]]]:
    """Each call's `(created_at, latency record)`, for the calls that have one."""
    query = select(Session.created_at, SessionLatency.record).join(
        SessionLatency, SessionLatency.session_id == Session.id
    )
    rows = await db.execute(_in_window(query, account_id, start, end, agent_id))
    return [(created, record) for created, record in rows]


async def costs(
    db: AsyncSession, account_id: str, start: datetime, end: datetime, agent_id: str | None
) -> list[tuple[datetime, str | None, dict[str, Any]]]:
    """Each ended call's `(created_at, agent_id, cost)`."""
    query = select(Session.created_at, Session.agent_id, SessionCost.cost).join(
        SessionCost, SessionCost.session_id == Session.id
    )
    rows = await db.execute(_in_window(query, account_id, start, end, agent_id))
    return [(created, agent, cost) for created, agent, cost in rows]


async def failed_calls(
    db: AsyncSession,
    account_id: str,
    start: datetime,
    end: datetime,
    agent_id: str | None,
    limit: int,
) -> list[Session]:
    """The latest calls that failed, newest first."""
    query = _in_window(select(Session), account_id, start, end, agent_id)
    rows = await db.scalars(query.where(FAILED).order_by(Session.created_at.desc()).limit(limit))
    return list(rows)


async def failed_webhooks(
    db: AsyncSession,
    account_id: str,
    start: datetime,
    end: datetime,
    agent_id: str | None,
    limit: int,
) -> list[WebhookDelivery]:
    """The latest webhook deliveries that gave up, newest first."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.account_id == account_id,
        WebhookDelivery.status == "failed",
        WebhookDelivery.created_at >= start,
        WebhookDelivery.created_at < end,
    )
    if agent_id:
        query = query.where(WebhookDelivery.agent_id == agent_id)
    rows = await db.scalars(query.order_by(WebhookDelivery.created_at.desc()).limit(limit))
    return list(rows)


async def live_calls(db: AsyncSession, account_id: str) -> list[Session]:
    """The account's calls in progress, oldest first."""
    rows = await db.scalars(
        select(Session)
        .where(Session.account_id == account_id, Session.status == "active")
        .order_by(Session.started_at, Session.id)
    )
    return list(rows)
