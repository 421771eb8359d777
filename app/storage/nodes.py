"""Node leases: every server process (worker) registers itself, renews its lease, and ends
the live calls of nodes whose lease ran out."""

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import utcnow
from app.storage.models import Node, Session


async def renew(
    db: AsyncSession, node_id: str, started_at: datetime, *, live_calls: int, load: float
) -> None:
    """Register the node, or renew its lease (registering it again if a peer reaped it)."""
    now = utcnow()
    result = await db.execute(
        update(Node)
        .where(Node.id == node_id)
        .values(heartbeat_at=now, live_calls=live_calls, load=load)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
        db.add(
            Node(
                id=node_id,
                started_at=started_at,
                heartbeat_at=now,
                live_calls=live_calls,
                load=load,
            )
        )
    await db.commit()


async def is_live(db: AsyncSession, node_id: str, lease_secs: float) -> bool:
    """Whether the node holds a current lease."""
    since = utcnow() - timedelta(seconds=lease_secs)
    node = await db.get(Node, node_id)
    return node is not None and node.heartbeat_at >= since


async def remove(db: AsyncSession, node_id: str) -> None:
    """A node shutting down cleanly gives up its lease."""
    await db.execute(delete(Node).where(Node.id == node_id))
    await db.commit()


async def fail_lost_calls(
    db: AsyncSession, lease_secs: float, on_ended: Callable[[AsyncSession, str], Awaitable[None]]
) -> list[str]:
    """Live calls of nodes without a current lease end `failed` / `node_lost` (transcripts stay);
    expired leases are dropped. Each call is ended once, however many nodes do this at once, and
    `on_ended(db, session_id)` adds what follows a call's end to the transaction that ends it."""
    now = utcnow()
    live_nodes = select(Node.id).where(Node.heartbeat_at >= now - timedelta(seconds=lease_secs))
    lost = await db.execute(
        select(Session.id, Session.started_at)
        .where(Session.status == "active", Session.host.is_(None) | Session.host.not_in(live_nodes))
        .order_by(Session.id)
    )
    ended = []
    for session_id, started_at in lost.all():
        result = await db.execute(
            update(Session)
            .where(Session.id == session_id, Session.status == "active")
            .values(
                status="failed",
                end_reason="node_lost",
                ended_at=now,
                resume_deadline=None,
                duration_secs=round((now - started_at).total_seconds(), 3) if started_at else None,
            )
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
            await on_ended(db, session_id)
            ended.append(session_id)
        await (
            db.commit()
        )  # one call at a time: reapers running at once never wait on each other's locks
    await db.execute(delete(Node).where(Node.heartbeat_at < now - timedelta(seconds=lease_secs)))
    await db.commit()
    return ended
