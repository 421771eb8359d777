"""The one way into a call, whatever the entry point (sessions and calls REST, the session
WebSocket, WebRTC, phone calls, carrier streams): check the agent, refuse while this node
drains or is full, and create or claim the session under the account's concurrent-call cap.

A node is full at `max_calls_per_worker` calls (running or admitted here and about to run: the
place is held from the moment of admission, so a burst cannot slip past the cap) or when its
load is above `load_threshold`. A full node refuses a new call before it starts (503
`server_busy` with `Retry-After`; entry points turn it into WebSocket close 1013 or a Twilio
`<Reject reason="busy"/>`), so the calls already running keep their pace.

The cap is checked and taken in one transaction that first locks the account's row (on SQLite,
the database's write lock), so admissions to one account queue up across every worker and
machine: a burst of joins can never put more calls live than the cap allows. Live calls and
carrier calls still ringing hold a place, and so do the phone callers waiting in line for one
(`app/telephony/call_queue.py`): a new call finds every one of them ahead of it (a waiting
caller, those who came before it), so a freed place goes to the caller who came first.
"""

from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.agents import pipeline_config
from app.errors import APIError
from app.logs import bind_call
from app.state import AppState
from app.storage import call_queue as queue_store
from app.storage import sessions as session_store
from app.storage.ids import new_id, utcnow
from app.storage.models import Agent, CallWait, Session
from app.tracing import tracer


def check_agent(state: AppState, agent: Agent | None, agent_id: str | None = None) -> None:
    """409 for a paused or deleted agent; 422 when its pipeline is gone, does not load or lacks
    credentials."""
    if agent is None or agent.status != "active":
        status = agent.status if agent else "deleted"
        raise APIError(
            409,
            f"agent_{status}",
            f"agent '{agent.id if agent else agent_id}' is {status} and cannot start a session",
        )
    missing = pipeline_config(state.catalog, agent.pipeline).missing_env()
    if missing:
        raise APIError(
            422,
            "missing_credentials",
            f"pipeline '{agent.pipeline}' needs {', '.join(missing)} set in the server's environment",
            {"missing": missing},
        )


def refuse_while_draining(state: AppState) -> None:
    if state.draining:
        raise APIError(
            503,
            "server_draining",
            "the server is shutting down; try again shortly",
            headers={"Retry-After": "10"},
        )


BUSY_RETRY_AFTER_SECS = 5


def busy_refusal(state: AppState, besides: str | None = None) -> APIError | None:
    """The 503 `server_busy` a full node gives a new call (`besides`: the call being admitted,
    if it already holds a place), or None while there is room."""
    settings = state.settings
    cap, taken, load = settings.max_calls_per_worker, state.calls.taken(besides), state.node.load
    if cap and taken >= cap:
        reason = f"this server is running its limit of {cap} calls"
    elif load > settings.load_threshold:
        reason = f"this server is too busy (load {load:.2f})"
    else:
        return None
    return APIError(
        503,
        "server_busy",
        f"{reason}; try again shortly",
        {"limit": cap, "calls": taken, "load": load, "load_threshold": settings.load_threshold},
        headers={"Retry-After": str(BUSY_RETRY_AFTER_SECS)},
    )


def refuse_while_full(state: AppState, besides: str | None = None) -> None:
    refusal = busy_refusal(state, besides)
    if refusal:
        raise refusal


@tracer.start_as_current_span("session.start")
async def start_session(
    state: AppState,
    db: AsyncSession,
    agent: Agent,
    *,
    connection_type: str,
    live: bool,
    metadata: dict | None = None,
    initial_message: str | None = None,
    inline_config: dict | None = None,
    belonging: list | None = None,
    queued: CallWait | None = None,
    voicemail: dict | None = None,
) -> Session:
    """A new session for `agent`, committed with the rows `belonging` to it (their `session_id`
    is set): `live` (claimed by this node at once, its place held here) or `created`, for a
    client or carrier to join; for the `queued` caller (then `connected`), if it is one;
    `voicemail`: the answering-machine setting an outbound call follows. 409/422/429/503
    refusals."""
    check_agent(state, agent)
    refuse_while_draining(state)
    refuse_while_full(state)
    now = utcnow()
    session = Session(
        id=new_id("ses"),
        account_id=agent.account_id,
        agent_id=agent.id,
        status="created",
        connection_type=connection_type,
        session_metadata=metadata or {},
        initial_message=initial_message,
        inline_config=inline_config,
        voicemail=voicemail,
        created_at=now,
        expires_at=now + timedelta(seconds=state.settings.session_connect_ttl_secs),
    )
    bind_call(session.id, agent.id, agent.account_id)
    if live:
        session.status, session.started_at, session.host = "active", now, state.node.id
    async with _under_cap(
        state, db, agent.account_id, hold=session.id if live else None, new_call=True, queued=queued
    ):
        db.add(session)
        await db.flush()  # the session first: the rows belonging to it reference it (foreign keys)
        for row in belonging or ():
            row.session_id = session.id
            db.add(row)
        if queued is not None:
            queued.status, queued.session_id = "connected", session.id
    return session


@tracer.start_as_current_span("session.join")
async def join_session(
    state: AppState, db: AsyncSession, session: Session, agent: Agent | None
) -> bool:
    """Claim a `created` session for this node under the cap; False if another connection
    claimed it first. 409/422/429/503 refusals."""
    bind_call(session.id, session.agent_id, session.account_id)
    check_agent(state, agent, session.agent_id)
    refuse_while_draining(state)
    session_id = session.id  # a failed transaction expires the row's attributes
    refuse_while_full(state, besides=session_id)
    joined = False
    try:
        async with _under_cap(state, db, session.account_id, besides=session_id, hold=session_id):
            joined = await session_store.claim(db, session, state.node.id)
    finally:
        if not joined:
            state.calls.release(session_id)
    return joined


async def claim_under_cap(state: AppState, db: AsyncSession, session: Session) -> bool:
    """Claim a `created` session under the cap (429), without the checks of a call this node
    runs (a carrier's answered callback: the call's stream may land on any node)."""
    async with _under_cap(state, db, session.account_id, besides=session.id):
        return await session_store.claim(db, session, state.node.id)


@asynccontextmanager
async def _under_cap(
    state: AppState,
    db: AsyncSession,
    account_id: str,
    besides: str | None = None,
    hold: str | None = None,
    new_call: bool = False,
    queued: CallWait | None = None,
):
    """One transaction holding the account's lock: 429 if its calls (but `besides`) fill its
    cap, with a `new_call` the callers waiting ahead of it too (of `queued`, if it is a waiting
    caller: those before it); otherwise what the block adds or claims is committed before the
    lock is let go. With `hold`, that session's place on this node is checked (503) and held
    once the account has room (so calls the account cap turns away never crowd this node),
    given back on failure. (A session joined later already had its turn when it was made.)"""
    await db.commit()  # whatever the request did so far; the lock starts a fresh transaction
    try:
        cap = (
            await session_store.lock_account(db, account_id) or state.settings.max_concurrent_calls
        )
        live = await session_store.count_live(db, account_id, besides=besides)
        waiting = await queue_store.count_ahead(db, account_id, queued) if new_call else 0
        if live + waiting >= cap:
            raise APIError(
                429,
                "concurrent_call_limit",
                f"this account already has {live} live calls and {waiting} callers waiting, its "
                f"limit is {cap}; try again when one ends",
                {"limit": cap, "active": live, "waiting": waiting},
                headers={"Retry-After": "30"},
            )
        if hold:
            refuse_while_full(state, besides=hold)
            state.calls.hold(hold)
        yield
        await db.commit()
    except BaseException:
        await db.rollback()
        if hold:
            state.calls.release(hold)
        raise
