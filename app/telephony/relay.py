"""Relay tokens: the signed, single-use context a carrier's media stream presents.

A relay token names the agent, the session, the agent instance and the account,
expires with the session's connect window, and carries a random `jti`. Opening a
stream records the `jti` in the database, so a replayed token is refused even
after a restart.
"""

import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from app.calls import admission
from app.calls.tokens import TokenError, TokenSigner
from app.errors import APIError, Refusal
from app.state import AppState
from app.storage import calls as call_store
from app.storage import sessions as session_store
from app.storage import telephony as store
from app.storage.models import Agent, Session
from app.telephony.variables import personalized

KIND = "relay"


def issue_relay_token(tokens: TokenSigner, session: Session, instance_id: str | None) -> str:
    claims = {
        "agt": session.agent_id,
        "sid": session.id,
        "inst": instance_id,
        "acc": session.account_id,
        "jti": secrets.token_urlsafe(16),
    }
    return tokens.issue(KIND, claims, session.expires_at.timestamp())


async def open_relay(state: AppState, token: str | None) -> tuple[Session, Agent]:
    """The claimed session and personalized agent a stream's token opens, or a `Refusal`."""
    if not token:
        raise Refusal(4401, "missing_token", "the stream's start message carries no relay token")
    try:
        claims = state.tokens.verify(token, KIND)
    except TokenError as exc:
        raise Refusal(4401, "invalid_token", f"relay token refused: {exc}") from None
    async with state.db.sessions() as db:
        if not await store.use_relay_token(db, str(claims.get("jti")), str(claims.get("sid"))):
            raise Refusal(4401, "token_used", "relay token refused: it was already used")
        session = await session_store.get_session(db, claims["acc"], claims["sid"])
        if session is None:
            raise Refusal(4404, "session_not_found", f"session '{claims['sid']}' not found")
        # `active` is fine if Twilio's in-progress callback got there first: the token is single-use.
        if session.status not in session_store.ACTIVE_STATUSES or state.calls.get(session.id):
            raise Refusal(
                4409,
                f"session_{session.status}",
                f"session '{session.id}' is {session.status} and cannot be joined",
            )
        try:
            agent = await _joinable_agent(db, session, claims.get("inst"))
            if session.status == "created":
                joined = await admission.join_session(state, db, session, agent)
            else:  # answered on some node before its stream started here
                joined = await session_store.move_to(db, session, state.node.id)
        except (APIError, Refusal) as exc:
            # The stream that used the token is refused: the call can't go on, so it ends here
            # (a status callback leaves a call whose stream opened to the node running it).
            refusal = Refusal.from_api_error(exc) if isinstance(exc, APIError) else exc
            await session_store.finish(
                db, session.id, status="failed", end_reason=refusal.code, error=refusal.message
            )
            raise refusal from None
        if not joined:
            raise Refusal(4409, "session_active", f"session '{session.id}' already has a stream")
        return session, agent


async def _joinable_agent(db: AsyncSession, session: Session, instance_id: str | None) -> Agent:
    """The session's active agent, personalized with its instance's variables; else a Refusal
    (or the APIError of a variable the call lacks)."""
    agent = await call_store.call_agent(db, session)  # stored, or an inline call's own
    if agent is None or agent.status != "active":
        status = agent.status if agent else "deleted"
        raise Refusal(4409, f"agent_{status}", f"agent '{session.agent_id}' is {status}")
    variables = {}
    if instance_id:
        instance = await store.get_instance(db, session.account_id, agent.id, instance_id)
        if instance is None:
            raise Refusal(4404, "instance_not_found", f"agent instance '{instance_id}' not found")
        variables = instance.variables
    return personalized(agent, variables)  # an APIError if a variable is missing
