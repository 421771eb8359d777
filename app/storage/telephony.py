"""Telephony queries: agent instances, phone calls, phone-number routing, used relay tokens.

Everything a caller's API key reaches is scoped to its account. Carrier webhooks carry
no API key: they find their rows by the carrier's call id or by the dialled number,
and the row then names the account.
"""

from sqlalchemy import String, cast, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.models import Agent, AgentInstance, PhoneCall, UsedRelayToken


async def get_instance(db: AsyncSession, account_id: str, agent_id: str, instance_id: str) -> AgentInstance | None:
    return await db.scalar(
        select(AgentInstance).where(
            AgentInstance.id == instance_id, AgentInstance.agent_id == agent_id, AgentInstance.account_id == account_id
        )
    )


async def list_instances(db: AsyncSession, account_id: str, agent_id: str) -> list[AgentInstance]:
    rows = await db.scalars(
        select(AgentInstance)
        .where(AgentInstance.agent_id == agent_id, AgentInstance.account_id == account_id)
        .order_by(AgentInstance.created_at, AgentInstance.id)
    )
    return list(rows)


async def agent_for_number(db: AsyncSession, number: str) -> Agent | None:
    """The active agent a dialled number is assigned to (the newest, if several claim it)."""
    candidates = await db.scalars(
        select(Agent)
        .where(Agent.status == "active", cast(Agent.phone_numbers, String).contains(f'"{number}"'))
        .order_by(Agent.created_at.desc())
    )
    return next((agent for agent in candidates if number in agent.phone_numbers), None)


async def agent_by_id(db: AsyncSession, agent_id: str) -> Agent | None:
    """An agent by id in any account (carrier webhooks name the agent, not the account)."""
    return await db.get(Agent, agent_id)


async def get_call(db: AsyncSession, call_id: str) -> PhoneCall | None:
    return await db.get(PhoneCall, call_id)


async def call_by_sid(db: AsyncSession, call_sid: str) -> PhoneCall | None:
    return await db.scalar(select(PhoneCall).where(PhoneCall.call_sid == call_sid))


async def call_for_session(db: AsyncSession, session_id: str) -> PhoneCall | None:
    return await db.scalar(select(PhoneCall).where(PhoneCall.session_id == session_id))


async def use_relay_token(db: AsyncSession, jti: str, session_id: str) -> bool:
    """Mark a relay token used; False if it was used before (even by an earlier process)."""
    db.add(UsedRelayToken(jti=jti, session_id=session_id))
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        return False
    return True


async def stream_started(db: AsyncSession, session_id: str, carrier: str, call_sid: str | None) -> None:
    """The carrier's stream joined: the call is in progress (and now we know its call id)."""
    call = await call_for_session(db, session_id)
    if call is None:
        return
    call.call_sid = call.call_sid or call_sid
    call.status = "in-progress"
    await db.commit()


async def stream_ended(db: AsyncSession, session_id: str) -> None:
    """The carrier's stream is over; the call is too, unless a status callback said otherwise."""
    call = await call_for_session(db, session_id)
    if call is not None and call.status == "in-progress":
        call.status = "completed"
        await db.commit()
