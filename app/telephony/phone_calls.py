"""Starting a phone session, and following the carrier's call-status callbacks."""

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from app.calls import admission
from app.errors import APIError, not_found
from app.state import AppState
from app.storage import nodes as node_store
from app.storage import sessions as session_store
from app.storage import telephony as store
from app.storage.ids import new_id, utcnow
from app.storage.models import Agent, CallWait, PhoneCall, Session
from app.telephony.variables import check_variables

FAILED_STATUSES = {
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "call_failed",
    "canceled": "canceled",
}
"""Twilio call statuses that end a session as `failed`, and the end reason each gives."""


async def start_phone_session(
    state: AppState,
    db: AsyncSession,
    agent: Agent,
    *,
    carrier: str,
    direction: str,
    from_number: str,
    to_number: str,
    instance_id: str | None = None,
    call_sid: str | None = None,
    queued: CallWait | None = None,
    voicemail: dict | None = None,
) -> tuple[Session, PhoneCall]:
    """A `created` session and its phone call row (for the `queued` caller, if it waited in
    line: its session's metadata says how long); 404/409/422/429/503 as for any session, and
    422 if the agent's placeholders lack a variable. `voicemail`: an outbound call's
    answering-machine setting (`app.voicemail.call_setting`)."""
    variables = {}
    if instance_id:
        instance = await store.get_instance(db, agent.account_id, agent.id, instance_id)
        if instance is None:
            raise not_found("instance", instance_id)
        variables = instance.variables
    check_variables(agent, variables)
    metadata: dict[str, str | float] = {
        "carrier": carrier,
        "direction": direction,
        "from": from_number,
        "to": to_number,
    }
    if instance_id:
        metadata["instance_id"] = instance_id
    if queued is not None:
        metadata["waited_secs"] = round((utcnow() - queued.enqueued_at).total_seconds(), 1)
    call = PhoneCall(
        id=new_id("call"),
        account_id=agent.account_id,
        agent_id=agent.id,
        instance_id=instance_id,
        carrier=carrier,
        direction=direction,
        from_number=from_number,
        to_number=to_number,
        call_sid=call_sid,
        status="queued",
    )
    session = await admission.start_session(
        state,
        db,
        agent,
        connection_type=carrier,
        live=False,
        metadata=metadata,
        belonging=[call],
        queued=queued,
        voicemail=voicemail,
    )
    return session, call


async def caller_id(
    state: AppState, db: AsyncSession, agent: Agent, from_number: str | None
) -> str:
    """The caller ID of an outbound call: `from_number`, else the agent's first phone number,
    else TWILIO_FROM_NUMBER; 422 if there is none, 403 unless the agent's account holds it (or
    it is the server's TWILIO_FROM_NUMBER)."""
    settings = state.settings
    number = from_number or next(iter(agent.phone_numbers), None) or settings.twilio_from_number
    if not number:
        raise APIError(
            422,
            "missing_from",
            "no caller ID: pass `from`, give the agent a phone number, or set TWILIO_FROM_NUMBER",
        )
    if number != settings.twilio_from_number and not await store.account_holds_number(
        db, agent.account_id, number
    ):
        raise APIError(
            403,
            "from_not_owned",
            f"from: {number} is not a number of this account (an agent's phone_numbers)",
            {"field": "from", "number": number},
        )
    return number


async def apply_status(state: AppState, db: AsyncSession, call: PhoneCall, status: str) -> None:
    """Follow a call-status callback: ringing; in-progress → session active (if the account's
    cap still has room, else failed); completed;
    busy / no-answer / failed / canceled → session failed with that reason.

    A call whose stream runs, here or on another live node, records its own end (the carrier
    stops the stream as the call ends), so it is left alone here.
    """
    call.status = status[:16]
    await db.commit()
    session = await db.get_one(Session, call.session_id)
    if status == "in-progress" and session.status == "created":
        try:
            await admission.claim_under_cap(state, db, session)
        except APIError as exc:
            await session_store.finish(
                db, session.id, status="failed", end_reason=exc.body.code, error=exc.body.message
            )
    elif (
        status in ("completed", *FAILED_STATUSES)
        and session.status in session_store.ACTIVE_STATUSES
        and not await _running(state, db, session)
    ):
        if status == "completed":
            await session_store.finish(
                db, session.id, status="completed", end_reason="completed", error=None
            )
        else:
            await session_store.finish(
                db,
                session.id,
                status="failed",
                end_reason=FAILED_STATUSES[status],
                error=f"the call ended {status}",
            )
    logger.info(
        f"call {call.id} ({call.call_sid}): {status}; session {session.id} is {session.status}"
    )


async def _running(state: AppState, db: AsyncSession, session: Session) -> bool:
    """Whether the session's call runs: in this process, or on the live node it moved to when
    its stream opened (before that, its host is only the node that admitted it)."""
    if state.calls.get(session.id) is not None:
        return True
    host = session.host
    if host is None or host == state.node.id:
        return False
    return await store.stream_opened(db, session.id) and await node_store.is_live(
        db, host, state.settings.node_lease_secs
    )
