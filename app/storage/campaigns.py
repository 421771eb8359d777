"""Campaign queries: campaigns, their contacts, and the conditional updates that make each
scheduling step and each dial happen once."""

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import utcnow
from app.storage.models import Campaign, CampaignContact

IN_FLIGHT = ("calling", "dialing")
"""Contact statuses of an attempt under way: they count against `max_concurrent`."""


async def get_campaign(db: AsyncSession, account_id: str, campaign_id: str) -> Campaign | None:
    return await db.scalar(
        select(Campaign).where(Campaign.id == campaign_id, Campaign.account_id == account_id)
    )


async def list_campaigns(db: AsyncSession, account_id: str) -> list[Campaign]:
    return list(
        await db.scalars(
            select(Campaign)
            .where(Campaign.account_id == account_id)
            .order_by(Campaign.created_at.desc())
        )
    )


async def status_counts(db: AsyncSession, campaign_id: str) -> dict[str, int]:
    rows = await db.execute(
        select(CampaignContact.status, func.count())
        .where(CampaignContact.campaign_id == campaign_id)
        .group_by(CampaignContact.status)
    )
    return {status: count for status, count in rows.tuples()}


async def list_contacts(
    db: AsyncSession,
    campaign_id: str,
    *,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[CampaignContact], int]:
    query = select(CampaignContact).where(CampaignContact.campaign_id == campaign_id)
    if status:
        query = query.where(CampaignContact.status == status)
    total = await db.scalar(select(func.count()).select_from(query.subquery()))
    page = query.order_by(CampaignContact.row).offset(offset).limit(limit)
    return list(await db.scalars(page)), total or 0


async def take_tick(db: AsyncSession, campaign_id: str, seq: int) -> bool:
    """Whether scheduling step `seq` is the campaign's next one (and now taken: a re-run of
    it, or of an older step, gets False). Locks the campaign's row until the transaction ends."""
    taken = await db.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.tick_seq == seq)
        .values(tick_seq=seq + 1)
    )
    return taken.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult


async def count_in_flight(db: AsyncSession, campaign_id: str) -> int:
    return (
        await db.scalar(
            select(func.count()).where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.status.in_(IN_FLIGHT),
            )
        )
        or 0
    )


async def due_contacts(db: AsyncSession, campaign_id: str, limit: int) -> list[CampaignContact]:
    """Pending contacts whose next attempt is due, first due first."""
    return list(
        await db.scalars(
            select(CampaignContact)
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.status == "pending",
                CampaignContact.next_attempt_at <= utcnow(),
            )
            .order_by(CampaignContact.next_attempt_at, CampaignContact.row)
            .limit(limit)
        )
    )


async def take_attempt(db: AsyncSession, contact_id: str, attempt: int) -> bool:
    """Whether this run places attempt `attempt` of the contact (`calling` → `dialing`); False
    if a run already did (or the attempt was cancelled)."""
    taken = await db.execute(
        update(CampaignContact)
        .where(
            CampaignContact.id == contact_id,
            CampaignContact.status == "calling",
            CampaignContact.attempts == attempt,
        )
        .values(status="dialing")
    )
    return taken.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult


async def contact_dialing(db: AsyncSession, call_id: str) -> CampaignContact | None:
    """The contact whose attempt under way is this phone call."""
    return await db.scalar(
        select(CampaignContact).where(
            CampaignContact.call_id == call_id, CampaignContact.status == "dialing"
        )
    )


async def cancel_waiting(db: AsyncSession, campaign_id: str) -> None:
    """Contacts not yet dialled are cancelled (calls under way go on to their end)."""
    await db.execute(
        update(CampaignContact)
        .where(
            CampaignContact.campaign_id == campaign_id,
            CampaignContact.status.in_(("pending", "calling")),
        )
        .values(status="cancelled")
    )
