"""The direct WebSocket session: `WS /v1/agents/{id}/session` and a session's `websocket_url`.

Credentials: the API key in `X-API-Key`, or, for browsers (which can't set headers), in the
`Sec-WebSocket-Protocol` header as subprotocols `["switchboard", "key.<api key>"]` (a session's
token likewise as `token.<token>`), answered with `switchboard`. The older query form
(`?api_key=`, `?token=`) still works; its values are redacted from every log line.

Refusals close the socket with a code and a reason, after a `session.error` event:
4400 bad request, 4401 unauthorized, 4404 not found, 4409 the agent or session
can't take a call now, 4429 the account is at its concurrent-call cap, 1013 the
server is shutting down (try again later).
"""

import re

from fastapi import APIRouter, WebSocket
from loguru import logger
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from starlette.websockets import WebSocketState

from app.calls import admission
from app.calls.audio_pacing import with_real_time_audio
from app.calls.protocol import SAMPLE_RATES, SessionProtocolSerializer
from app.calls.session import CallSession
from app.calls.tokens import TokenError
from app.deps import authenticate
from app.errors import APIError, Refusal
from app.state import AppState
from app.storage import agents as agent_store
from app.storage import calls as call_store
from app.storage import sessions as session_store
from app.storage.models import Agent, Session
from pipelines.registry import build_processors

router = APIRouter()

SUBPROTOCOL = "switchboard"
ID_SHAPE = re.compile(r"[A-Za-z0-9_]{1,40}")
"""What our ids look like (`new_id`); anything else is refused before it reaches the database."""


def _sample_rate(websocket: WebSocket) -> int:
    raw = websocket.query_params.get("sample_rate", "16000")
    if not raw.isdigit() or int(raw) not in SAMPLE_RATES:
        raise Refusal(
            4400,
            "invalid_sample_rate",
            f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}",
        )
    return int(raw)


def offered_subprotocols(websocket: WebSocket) -> list[str]:
    return [
        p.strip()
        for p in websocket.headers.get("sec-websocket-protocol", "").split(",")
        if p.strip()
    ]


def _credential(websocket: WebSocket, prefix: str, query: str) -> str | None:
    """A credential offered as the subprotocol `<prefix>.<value>`, else in the query."""
    for protocol in offered_subprotocols(websocket):
        if protocol.startswith(f"{prefix}."):
            return protocol.removeprefix(f"{prefix}.")
    return websocket.query_params.get(query)


def _api_key(websocket: WebSocket) -> str | None:
    return websocket.headers.get("x-api-key") or _credential(websocket, "key", "api_key")


def _check_id(kind: str, ident: str) -> None:
    if not ID_SHAPE.fullmatch(ident):
        raise Refusal(4404, f"{kind}_not_found", f"{kind} '{ident[:40]}' not found")


async def _agent_session(
    state: AppState, websocket: WebSocket, agent_id: str
) -> tuple[Session, Agent]:
    """A fresh session for `WS /v1/agents/{id}/session` (API key required)."""
    _check_id("agent", agent_id)
    async with state.db.sessions() as db:
        caller = await authenticate(db, _api_key(websocket))
        if caller is None:
            raise Refusal(
                4401,
                "unauthorized",
                "missing or invalid API key (X-API-Key header or the subprotocol key.<api key>)",
            )
        agent = await agent_store.get_agent(db, caller.account_id, agent_id)
        if agent is None:
            raise Refusal(4404, "agent_not_found", f"agent '{agent_id}' not found")
        try:
            session = await admission.start_session(
                state, db, agent, connection_type="websocket", live=True
            )
        except APIError as exc:
            raise Refusal.from_api_error(exc) from None
        return session, agent


async def _existing_session(
    state: AppState, websocket: WebSocket, session_id: str
) -> tuple[Session, Agent]:
    """The session a `websocket_url` names (its token, or an API key)."""
    _check_id("session", session_id)
    async with state.db.sessions() as db:
        token = _credential(websocket, "token", "token")
        if token:
            try:
                claims = state.tokens.verify(token, "session")
            except TokenError as exc:
                raise Refusal(4401, "invalid_token", str(exc)) from None
            if claims.get("sid") != session_id:
                raise Refusal(4401, "invalid_token", "token is for another session")
            account_id = claims["acc"]
        else:
            caller = await authenticate(db, _api_key(websocket))
            if caller is None:
                raise Refusal(4401, "unauthorized", "missing or invalid session token or API key")
            account_id = caller.account_id
        session = await session_store.get_session(db, account_id, session_id)
        if session is None:
            raise Refusal(4404, "session_not_found", f"session '{session_id}' not found")
        if session.connection_type != "websocket":
            raise Refusal(
                4409,
                "wrong_connection_type",
                f"session '{session_id}' is for a {session.connection_type} connection",
            )
        # A session whose client dropped may be rejoined within its grace period.
        resuming = call_store.can_resume(session) and state.calls.get(session.id) is None
        if session.status != "created" and not resuming:
            raise Refusal(
                4409,
                f"session_{session.status}",
                f"session '{session_id}' is {session.status} and cannot be joined",
            )
        agent = await call_store.call_agent(db, session)
        if agent is None or agent.status != "active":
            status = agent.status if agent else "deleted"
            raise Refusal(4409, f"agent_{status}", f"agent '{session.agent_id}' is {status}")
        if resuming:
            if not await call_store.resume(db, session, state.node.id):
                raise Refusal(
                    4409,
                    "session_not_resumable",
                    f"session '{session_id}' can no longer be resumed",
                )
            return session, agent
        try:
            joined = await admission.join_session(state, db, session, agent)
        except APIError as exc:
            raise Refusal.from_api_error(exc) from None
        if not joined:
            raise Refusal(4409, "session_active", f"session '{session.id}' already has a client")
        return session, agent


async def _serve(websocket: WebSocket, open_session) -> None:
    state: AppState = websocket.app.state.switchboard
    await websocket.accept(
        subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(websocket) else None
    )
    try:
        sample_rate = _sample_rate(websocket)
        session, agent = await open_session(state)
    except Refusal as refusal:
        logger.info(f"WebSocket session refused ({refusal.code}): {refusal.message}")
        await websocket.send_json(
            {"type": "session.error", "code": refusal.code, "message": refusal.message}
        )
        await websocket.close(refusal.close_code, refusal.message[:120])
        return

    config = state.catalog.get(agent.pipeline)
    processors = build_processors(config)
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_sample_rate=sample_rate,
            serializer=with_real_time_audio(SessionProtocolSerializer(sample_rate)),
            **processors.transport_params(),
        ),
    )
    async with state.db.sessions() as db:
        history = await call_store.history(db, session.id)
    call = CallSession(
        state,
        session=session,
        agent=agent,
        config=config,
        processors=processors,
        transport=transport,
        session_protocol=True,
        audio_out_sample_rate=sample_rate,
        resumable=True,
        history=history,
    )
    await websocket.send_json(
        {
            "type": "session.ready",
            "session_id": session.id,
            "sample_rate": sample_rate,
            "resumed": bool(history),
        }
    )
    await call.run()
    if (
        websocket.application_state == WebSocketState.CONNECTED
        and websocket.client_state == WebSocketState.CONNECTED
    ):
        # The pipeline closes the socket when it ends; still open means it never ran.
        await websocket.send_json(
            {
                "type": "session.error",
                "code": "internal_error",
                "message": "the call could not start",
            }
        )
        await websocket.close(1011, "the call could not start")


@router.websocket("/v1/agents/{agent_id}/session")
async def agent_session(websocket: WebSocket, agent_id: str):
    await _serve(websocket, lambda state: _agent_session(state, websocket, agent_id))


@router.websocket("/v1/sessions/{session_id}/ws")
async def session_socket(websocket: WebSocket, session_id: str):
    await _serve(websocket, lambda state: _existing_session(state, websocket, session_id))
