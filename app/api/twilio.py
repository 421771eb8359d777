"""Twilio routes: session TwiML, the number webhook, status callbacks, outbound calls, Media Streams.

See :mod:`app.telephony` for the whole call flow. Routes Twilio calls (the voice
webhook, status and task callbacks) carry no API key: they must carry a valid
`X-Twilio-Signature` (403 otherwise; see :mod:`app.telephony.signatures`).
"""

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from loguru import logger
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app import campaigns
from app.agents import load_agent
from app.api.sessions import SessionOut, session_out
from app.calls.admission import busy_refusal
from app.casing import AgentIdQuery, CamelCaseAccepted
from app.deps import CallerDep, DbDep, StateDep
from app.errors import DRAINING_RESPONSES, ERROR_RESPONSES, APIError, ErrorBody, not_found
from app.state import AppState
from app.storage import sessions as session_store
from app.storage import telephony as store
from app.storage.models import CallWait, PhoneCall, Session
from app.telephony import call_queue, twilio
from app.telephony.call_queue import Overflow
from app.telephony.numbers import DialNumber, E164Number
from app.telephony.phone_calls import apply_status, caller_id, start_phone_session
from app.telephony.relay import issue_relay_token
from app.telephony.signatures import SIGNED_RESPONSES, check_twilio
from app.telephony.stream import CARRIERS, serve_stream
from app.urls import public_base_url, websocket_base
from app.voicemail import call_setting

router = APIRouter(tags=["telephony"], responses=ERROR_RESPONSES)

BUSY_APOLOGY = (
    "We're sorry, all our lines are busy right now. Please call again in a few minutes. Goodbye."
)
TWIML_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/xml": {}}, "description": "TwiML that connects the call to the agent"}
}


_FROM = AliasChoices("from_number", "from")
_TO = AliasChoices("to_number", "to")
"""The seed API's names for the numbers."""


class PhoneSessionCreate(CamelCaseAccepted):
    agent_id: str
    from_number: str = Field(validation_alias=_FROM, min_length=1, max_length=64)
    to_number: str = Field(validation_alias=_TO, min_length=1, max_length=64)
    instance_id: str | None = None


class TwilioSessionOut(BaseModel):
    twiml: str
    session: SessionOut


class OutboundCallCreate(CamelCaseAccepted):
    agent_id: str
    to_number: DialNumber = Field(validation_alias=_TO)
    from_number: E164Number | None = Field(
        default=None,
        validation_alias=_FROM,
        description="Caller ID: a number of the caller's account (an agent's phone_numbers) or the server's "
        "TWILIO_FROM_NUMBER; defaults to the agent's first phone number, then TWILIO_FROM_NUMBER",
    )
    instance_id: str | None = None


class CallTaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    session_id: str
    instance_id: str | None
    carrier: str
    direction: str
    from_number: str
    to_number: str
    call_sid: str | None
    status: str
    created_at: datetime


def stream_twiml(
    state: AppState, request: Request, session: Session, instance_id: str | None
) -> str:
    url = f"{websocket_base(state.settings, request)}{twilio.STREAM_PATH}"
    return twilio.connect_twiml(url, issue_relay_token(state.tokens, session, instance_id))


def phone_session_out(state: AppState, request: Request, session: Session) -> SessionOut:
    """The session as the API shows it, minus the direct-WebSocket URL: a phone call joins
    through its carrier's stream."""
    return session_out(state, request, session).model_copy(update={"websocket_url": None})


def twiml_response(twiml: str) -> Response:
    return Response(twiml, media_type="text/xml")


STORED_FIELDS = ("CallSid", "From", "To")
"""Form fields a phone call row keeps, in columns of `STORED_FIELD_MAX` characters."""
STORED_FIELD_MAX = 64


async def signed_form(state: AppState, request: Request) -> dict[str, str]:
    """Twilio's form fields, after checking the request's signature (422 for a field too long to store)."""
    form = dict(
        parse_qsl((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)
    )
    check_twilio(state.settings, request, form)
    for name in STORED_FIELDS:
        if len(form.get(name, "")) > STORED_FIELD_MAX:
            raise APIError(
                422, "validation_error", f"{name}: at most {STORED_FIELD_MAX} characters"
            )
    return form


@router.post(
    "/v1/sessions/twilio",
    response_model=TwilioSessionOut,
    summary="Create a Twilio session (TwiML)",
    responses={**TWIML_RESPONSES, **DRAINING_RESPONSES},
)
async def create_twilio_session(
    body: PhoneSessionCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> Response:
    """A session for a call and the TwiML that connects it: `text/xml`, or `{twiml, session}`
    with `Accept: application/json`."""
    agent = await load_agent(db, caller, body.agent_id)
    session, _call = await start_phone_session(
        state,
        db,
        agent,
        carrier="twilio",
        direction="inbound",
        from_number=body.from_number,
        to_number=body.to_number,
        instance_id=body.instance_id,
    )
    twiml = stream_twiml(state, request, session, body.instance_id)
    if "application/json" in request.headers.get("accept", ""):
        # The call joins through the stream, not the direct WebSocket.
        out = TwilioSessionOut(twiml=twiml, session=phone_session_out(state, request, session))
        return JSONResponse(out.model_dump(mode="json"))
    return twiml_response(twiml)


@router.post(
    "/v1/twilio/voice",
    summary="Twilio number webhook: a call comes in",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES, **DRAINING_RESPONSES},
    response_class=Response,
)
async def twilio_voice(
    request: Request, state: StateDep, db: DbDep, agent_id: AgentIdQuery
) -> Response:
    """Set this as the number's "A call comes in" webhook. The agent is the one the
    dialled number (`To`) is assigned to, or `?agent_id=`. A call the agent can't take is dialled
    on to its `overflow_number` if it has one; with `overflow: queue`, a call that finds the
    account at its cap waits in line (`<Enqueue>`, see `app/telephony/call_queue.py`); otherwise
    a full node (`server_busy`) rejects it busy, and an account at its cap or a draining server
    apologises and hangs up."""
    form = await signed_form(state, request)
    session, overflow, refusal = await start_inbound(
        state,
        db,
        "twilio",
        agent_id,
        to_number=form.get("To", ""),
        from_number=form.get("From", ""),
        call_id=form.get("CallSid"),
    )
    if session is not None:
        return twiml_response(stream_twiml(state, request, session, None))
    if overflow.number:
        return twiml_response(twilio.overflow_twiml(overflow.number))
    if overflow.queue and refusal == "concurrent_call_limit" and form.get("CallSid"):
        wait = await call_queue.join(
            state,
            db,
            overflow,
            call_sid=form["CallSid"],
            from_number=form.get("From", ""),
            to_number=form.get("To", ""),
        )
        if wait is not None:
            return twiml_response(
                call_queue.enqueue_twiml(public_base_url(state.settings, request), wait)
            )
    if busy_refusal(state) is not None and not state.draining:
        return twiml_response(twilio.busy_twiml())
    return twiml_response(twilio.apology_twiml(BUSY_APOLOGY))


async def start_inbound(
    state: AppState,
    db,
    carrier: str,
    agent_id: str | None,
    *,
    to_number: str,
    from_number: str,
    call_id: str | None,
) -> tuple[Session | None, Overflow, str | None]:
    """The session for a call coming in to `to_number`'s agent (or `agent_id`'s), what the agent
    does with calls it can't take, and the refusal's code; no session when the server is busy
    or draining or the account is at its cap, so the caller is sent to the overflow number,
    waits in line, or hears busy or an apology, never a dead line."""
    agent = await (
        store.agent_by_id(db, agent_id) if agent_id else store.agent_for_number(db, to_number)
    )
    if agent is None:
        raise (
            not_found("agent", agent_id)
            if agent_id
            else APIError(
                404, "number_not_assigned", f"no active agent has the phone number '{to_number}'"
            )
        )
    overflow = Overflow.of(agent)
    try:
        session, _call = await start_phone_session(
            state,
            db,
            agent,
            carrier=carrier,
            direction="inbound",
            from_number=from_number,
            to_number=to_number,
            call_sid=call_id,
        )
    except APIError as exc:
        if exc.status not in (429, 503):
            raise
        logger.info(f"{carrier} call {call_id} turned away: {exc.body.message}")
        return None, overflow, exc.body.code
    return session, overflow, None


async def _waiting_call(db, wait_id: str, form: dict[str, str]) -> CallWait:
    """The waiting call a queue callback names (its `CallSid` must be the call's)."""
    wait = await db.get(CallWait, wait_id)
    if wait is None or wait.call_sid != form.get("CallSid"):
        raise not_found("waiting_call", wait_id)
    return wait


@router.post(
    "/v1/twilio/queue/{wait_id}/wait",
    summary="Twilio callback: a waiting call's hold message and audio (`<Enqueue waitUrl>`)",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES},
    response_class=Response,
)
async def queue_wait(wait_id: str, request: Request, state: StateDep, db: DbDep) -> Response:
    form = await signed_form(state, request)
    wait = await _waiting_call(db, wait_id, form)
    base = public_base_url(state.settings, request)
    return twiml_response(await call_queue.hold(db, wait, form, base))


@router.post(
    "/v1/twilio/queue/{wait_id}/left",
    summary="Twilio callback: a waiting call left the queue (`<Enqueue action>`, `QueueResult`)",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES},
    response_class=Response,
)
async def queue_left(wait_id: str, request: Request, state: StateDep, db: DbDep) -> Response:
    form = await signed_form(state, request)
    wait = await _waiting_call(db, wait_id, form)
    if await call_queue.left(db, wait, form.get("QueueResult", "")):
        return twiml_response(twilio.apology_twiml(BUSY_APOLOGY))
    return twiml_response(twilio.empty_twiml())


@router.post(
    "/v1/twilio/queue/{wait_id}/connect",
    summary="Twilio callback: a waiting call's turn came (the Queue Member's new URL)",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES},
    response_class=Response,
)
async def queue_connect(wait_id: str, request: Request, state: StateDep, db: DbDep) -> Response:
    """The Media Stream TwiML of the admitted call; `<Enqueue>` again (its place in line kept)
    when this node can't take it now; an apology when the agent can no longer take calls."""
    form = await signed_form(state, request)
    wait = await _waiting_call(db, wait_id, form)
    if wait.status not in ("waiting", "offered"):
        return twiml_response(twilio.apology_twiml(BUSY_APOLOGY))
    base = public_base_url(state.settings, request)
    try:
        session = await call_queue.admit(state, db, wait)
    except APIError:
        return twiml_response(twilio.apology_twiml(BUSY_APOLOGY))
    if session is None:
        return twiml_response(call_queue.enqueue_twiml(base, wait))
    return twiml_response(stream_twiml(state, request, session, None))


@router.get(
    f"{call_queue.QUEUE_PATH}/hold.wav",
    summary="The hold audio waiting callers hear",
    responses={200: {"content": {"audio/wav": {}}, "description": "8 kHz WAV"}},
    response_class=Response,
)
async def queue_hold_audio() -> Response:
    return Response(
        call_queue.hold_audio(),
        media_type="audio/wav",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.post(
    "/v1/twilio/status",
    status_code=204,
    summary="Twilio call-status callback",
    responses=SIGNED_RESPONSES,
    response_class=Response,
)
async def twilio_status(request: Request, state: StateDep, db: DbDep) -> Response:
    """A call's status changes (for a call still waiting in line: its end, which takes it out)."""
    form = await signed_form(state, request)
    call = await store.call_by_sid(db, form.get("CallSid", ""))
    if call is None:
        if await call_queue.call_status(db, form.get("CallSid", ""), form.get("CallStatus", "")):
            return Response(status_code=204)
        raise APIError(404, "call_not_found", f"no call with CallSid '{form.get('CallSid', '')}'")
    await apply_status(state, db, call, form.get("CallStatus", ""))
    return Response(status_code=204)


@router.post(
    "/v1/calls/outbound",
    status_code=201,
    response_model=CallTaskOut,
    summary="Place an outbound call",
    responses={
        403: {"model": ErrorBody, "description": "`from` is not a number of the caller's account"},
        502: {"model": ErrorBody, "description": "Twilio refused the call"},
        **DRAINING_RESPONSES,
    },
)
async def create_outbound_call(
    body: OutboundCallCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> PhoneCall:
    """Creates a call task and its session, then asks Twilio to call `to`. Twilio fetches
    the task's `connect` callback when the callee answers; the agent speaks first (once a
    person is heard, with the agent's `voicemail` detection on)."""
    twilio.require_credentials(state.settings)
    agent = await load_agent(db, caller, body.agent_id)
    from_number = await caller_id(state, db, agent, body.from_number)
    session, call = await start_phone_session(
        state,
        db,
        agent,
        carrier="twilio",
        direction="outbound",
        from_number=from_number,
        to_number=body.to_number,
        instance_id=body.instance_id,
        voicemail=call_setting(agent.voicemail),
    )
    base = public_base_url(state.settings, request)
    try:
        call.call_sid = await twilio.place_call(
            state.settings,
            to=body.to_number,
            from_=from_number,
            url=f"{base}/v1/sessions/twilio/task/{call.id}/connect",
            status_callback=f"{base}/v1/sessions/twilio/task/{call.id}/status",
            amd_callback=f"{base}/v1/sessions/twilio/task/{call.id}/amd"
            if session.voicemail
            else None,
        )
    except APIError as exc:
        call.status, call.error = "failed", exc.body.message
        await db.commit()
        await session_store.finish(
            db, session.id, status="failed", end_reason="call_failed", error=exc.body.message
        )
        raise
    await db.commit()
    return call


@router.get(
    "/v1/calls/{call_id}",
    response_model=CallTaskOut,
    summary="Get a phone call (inbound or outbound)",
)
async def get_call(call_id: str, db: DbDep, caller: CallerDep) -> PhoneCall:
    call = await store.get_call(db, call_id)
    if call is None or call.account_id != caller.account_id:
        raise not_found("call", call_id)
    return call


async def _task(db, task_id: str) -> PhoneCall:
    call = await store.get_call(db, task_id)
    if call is None or call.direction != "outbound":
        raise not_found("call_task", task_id)
    return call


@router.post(
    "/v1/sessions/twilio/task/{task_id}/connect",
    summary="Twilio callback: the outbound call was answered",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES},
    response_class=Response,
)
async def task_connect(task_id: str, request: Request, state: StateDep, db: DbDep) -> Response:
    form = await signed_form(state, request)
    call = await _task(db, task_id)
    session = await session_store.get_session(db, call.account_id, call.session_id)
    if session is None:
        raise not_found("session", call.session_id)
    if session.status not in session_store.ACTIVE_STATUSES:
        raise APIError(
            409, f"session_{session.status}", f"session '{session.id}' is {session.status}"
        )
    call.call_sid = call.call_sid or form.get("CallSid")
    await db.commit()
    return twiml_response(stream_twiml(state, request, session, call.instance_id))


@router.post(
    "/v1/sessions/twilio/task/{task_id}/status",
    status_code=204,
    summary="Twilio callback: outbound call status",
    responses=SIGNED_RESPONSES,
    response_class=Response,
)
async def task_status(task_id: str, request: Request, state: StateDep, db: DbDep) -> Response:
    form = await signed_form(state, request)
    call = await _task(db, task_id)
    await apply_status(state, db, call, form.get("CallStatus", ""))
    await campaigns.record_outcome(state, db, call, form.get("CallStatus", ""))
    return Response(status_code=204)


@router.post(
    "/v1/sessions/twilio/task/{task_id}/amd",
    status_code=204,
    summary="Twilio callback: answering-machine detection's verdict on an outbound call",
    responses=SIGNED_RESPONSES,
    response_class=Response,
)
async def task_amd(task_id: str, request: Request, state: StateDep, db: DbDep) -> Response:
    form = await signed_form(state, request)
    call = await _task(db, task_id)
    call.call_sid = call.call_sid or form.get("CallSid")
    await campaigns.machine_answered(state, db, call, form.get("AnsweredBy", ""))
    return Response(status_code=204)


@router.websocket(twilio.STREAM_PATH)
async def twilio_stream(websocket: WebSocket):
    await serve_stream(websocket, CARRIERS["twilio"])
