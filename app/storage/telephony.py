"""Telephony queries: agent instances, phone calls, phone-number routing, used relay tokens.

Everything a caller's API key reaches is scoped to its account. Carrier webhooks carry
no API key: they find their rows by the carrier's call id or by the dialled number,
and the row then names the account.
"""

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.models import Agent, AgentInstance, PhoneCall, PhoneNumber, UsedRelayToken


async def get_instance(
    db: AsyncSession, account_id: str, agent_id: str, instance_id: str
) -> AgentInstance | None:
    return await db.scalar(
        select(AgentInstance).where(
            AgentInstance.id == instance_id,
            AgentInstance.agent_id == agent_id,
            AgentInstance.account_id == account_id,
        )
    )


async def list_instances(db: AsyncSession, account_id: str, agent_id: str) -> list[AgentInstance]:
    rows = await db.scalars(
        select(AgentInstance)
        .where(AgentInstance.agent_id == agent_id, AgentInstance.account_id == account_id)
        .order_by(AgentInstance.created_at, AgentInstance.id)
    )
    return list(rows)


class NumberTaken(Exception):
    """A phone number another agent holds; `agent_id` is None when that agent is in another account."""

    def __init__(self, number: str, agent_id: str | None):
        super().__init__(number)
        self.number = number
        self.agent_id = agent_id


async def _holders(db: AsyncSession, numbers: list[str]) -> dict[str, PhoneNumber]:
    rows = await db.scalars(select(PhoneNumber).where(PhoneNumber.number.in_(numbers)))
    return {row.number: row for row in rows}


async def _check_free(db: AsyncSession, agent: Agent, numbers: list[str]) -> dict[str, PhoneNumber]:
    holders = await _holders(db, numbers)
    for number in numbers:
        held = holders.get(number)
        if held is not None and held.agent_id != agent.id:
            raise NumberTaken(
                number, held.agent_id if held.account_id == agent.account_id else None
            )
    return holders


async def assign_numbers(db: AsyncSession, agent: Agent, numbers: list[str]) -> None:
    """Make `numbers` (E.164) the ones whose inbound calls reach `agent`, within the caller's
    transaction (flushed, not committed). NumberTaken if another agent holds one: the
    primary key on the number decides between concurrent claims, and the loser's
    transaction is rolled back."""
    held = await _check_free(db, agent, numbers)
    await db.execute(
        delete(PhoneNumber).where(
            PhoneNumber.agent_id == agent.id, PhoneNumber.number.not_in(numbers)
        )
    )
    db.add_all(
        PhoneNumber(number=number, account_id=agent.account_id, agent_id=agent.id)
        for number in numbers
        if number not in held
    )
    agent.phone_numbers = numbers
    try:
        await db.flush()
    except IntegrityError:
        await db.rollback()
        await _check_free(db, agent, numbers)
        raise


async def release_numbers(db: AsyncSession, agent_id: str) -> None:
    """Free a deleted agent's numbers (in the caller's transaction)."""
    await db.execute(delete(PhoneNumber).where(PhoneNumber.agent_id == agent_id))


async def account_holds_number(db: AsyncSession, account_id: str, number: str) -> bool:
    return (
        await db.scalar(
            select(PhoneNumber.number).where(
                PhoneNumber.number == number, PhoneNumber.account_id == account_id
            )
        )
        is not None
    )


async def agent_for_number(db: AsyncSession, number: str) -> Agent | None:
    """The active agent a dialled number (E.164) reaches: the one that holds it."""
    return await db.scalar(
        select(Agent)
        .join(PhoneNumber, PhoneNumber.agent_id == Agent.id)
        .where(PhoneNumber.number == number, Agent.status == "active")
    )


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


async def stream_opened(db: AsyncSession, session_id: str) -> bool:
    """Whether a media stream has opened for the session (one of its relay tokens was used)."""
    used = await db.execute(
        select(UsedRelayToken.jti).where(UsedRelayToken.session_id == session_id).limit(1)
    )
    return used.first() is not None


async def stream_started(
    db: AsyncSession, session_id: str, carrier: str, call_sid: str | None
) -> None:
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
