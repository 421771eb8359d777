"""Webhook delivery records. Every query is scoped to an account."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import new_id, utcnow
from app.storage.models import WebhookDelivery


def add_delivery(
    db: AsyncSession,
    *,
    account_id: str,
    agent_id: str,
    session_id: str | None,
    event: str,
    url: str,
    payload: dict,
) -> str:
    """Add a pending delivery to `db`'s transaction; returns its id (the event's id)."""
    delivery = WebhookDelivery(
        id=new_id("whd"),
        account_id=account_id,
        agent_id=agent_id,
        session_id=session_id,
        event=event,
        url=url,
        payload=payload,
        status="pending",
        attempts=0,
    )
    db.add(delivery)
    return delivery.id


async def record_attempt(
    db: AsyncSession, delivery_id: str, *, status: str, status_code: int | None, error: str | None
) -> None:
    delivery = await db.get_one(WebhookDelivery, delivery_id)
    delivery.attempts += 1
    delivery.status, delivery.last_status_code, delivery.last_error = status, status_code, error
    delivery.updated_at = utcnow()
    if status == "delivered":
        delivery.delivered_at = delivery.updated_at
    await db.commit()


async def list_deliveries(
    db: AsyncSession, account_id: str, agent_id: str, *, limit: int, offset: int
) -> tuple[list[WebhookDelivery], int]:
    query = select(WebhookDelivery).where(
        WebhookDelivery.account_id == account_id, WebhookDelivery.agent_id == agent_id
    )
    total = await db.scalar(select(func.count()).select_from(query.subquery()))
    rows = await db.scalars(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total or 0
