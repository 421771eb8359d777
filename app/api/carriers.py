"""Telnyx and Plivo: session answers (TeXML / Plivo XML), number webhooks and media-stream WebSockets.

Same flow as Twilio (see :mod:`app.telephony`) with Pipecat's Telnyx and Plivo
serializers. Both carriers keep the stream URL's query string, so the relay token
rides there (`?token=`); the same signature, expiry and single-use rules apply.
The number webhooks carry no API key: they must carry the carrier's signature
(:mod:`app.telephony.signatures`).
"""

from urllib.parse import parse_qs, quote
from xml.etree import ElementTree

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from twilio.twiml.voice_response import Connect, VoiceResponse

from app.agents import load_agent
from app.api.sessions import SessionOut
from app.api.twilio import (
    BUSY_APOLOGY,
    TWIML_RESPONSES,
    PhoneSessionCreate,
    phone_session_out,
    start_inbound,
    twiml_response,
)
from app.casing import AgentIdQuery
from app.deps import CallerDep, DbDep, StateDep
from app.errors import DRAINING_RESPONSES, ERROR_RESPONSES
from app.state import AppState
from app.storage.models import Session
from app.telephony import twilio
from app.telephony.numbers import SIP_URI
from app.telephony.phone_calls import start_phone_session
from app.telephony.relay import issue_relay_token
from app.telephony.signatures import SIGNED_RESPONSES, check_plivo, check_telnyx
from app.telephony.stream import CARRIERS, serve_stream
from app.urls import websocket_base

router = APIRouter(tags=["telephony"], responses=ERROR_RESPONSES)


class CarrierSessionOut(BaseModel):
    xml: str
    session: SessionOut


def texml(stream_url: str) -> str:
    """Telnyx TeXML (TwiML-compatible) connecting the call to a bidirectional stream."""
    response = VoiceResponse()
    connect = Connect()
    connect.stream(url=stream_url, bidirectional_mode="rtp", bidirectional_codec="PCMU")
    response.append(connect)
    return str(response)


def plivo_xml(stream_url: str) -> str:
    """Plivo XML starting a bidirectional μ-law stream for the whole call."""
    response = ElementTree.Element("Response")
    stream = ElementTree.SubElement(
        response,
        "Stream",
        bidirectional="true",
        keepCallAlive="true",
        contentType="audio/x-mulaw;rate=8000",
    )
    stream.text = stream_url
    return '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(
        response, encoding="unicode"
    )


def plivo_apology(message: str) -> str:
    """Plivo XML that says `message` and hangs up."""
    response = ElementTree.Element("Response")
    ElementTree.SubElement(response, "Speak").text = message
    ElementTree.SubElement(response, "Hangup")
    return '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(
        response, encoding="unicode"
    )


def plivo_overflow(target: str) -> str:
    """Plivo XML that dials `target` (a SIP URI as a `<User>`)."""
    response = ElementTree.Element("Response")
    dial = ElementTree.SubElement(response, "Dial")
    ElementTree.SubElement(dial, "User" if SIP_URI.match(target) else "Number").text = target
    return '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(
        response, encoding="unicode"
    )


ANSWERS = {"telnyx": texml, "plivo": plivo_xml}
# TeXML speaks TwiML's <Say> and <Dial>.
APOLOGIES = {"telnyx": twilio.apology_twiml, "plivo": plivo_apology}
OVERFLOWS = {"telnyx": twilio.overflow_twiml, "plivo": plivo_overflow}


def answer_xml(
    carrier: str, state: AppState, request: Request, session: Session, instance_id: str | None
) -> str:
    """The carrier's XML connecting the call to its stream, the relay token in the URL."""
    token = issue_relay_token(state.tokens, session, instance_id)
    return ANSWERS[carrier](
        f"{websocket_base(state.settings, request)}/v1/sessions/{carrier}/stream?token={quote(token)}"
    )


async def _create(
    carrier: str, body: PhoneSessionCreate, request: Request, state, db, caller
) -> Response:
    agent = await load_agent(db, caller, body.agent_id)
    session, _call = await start_phone_session(
        state,
        db,
        agent,
        carrier=carrier,
        direction="inbound",
        from_number=body.from_number,
        to_number=body.to_number,
        instance_id=body.instance_id,
    )
    xml = answer_xml(carrier, state, request, session, body.instance_id)
    if "application/json" in request.headers.get("accept", ""):
        out = CarrierSessionOut(xml=xml, session=phone_session_out(state, request, session))
        return JSONResponse(out.model_dump(mode="json"))
    return twiml_response(xml)


@router.post(
    "/v1/sessions/telnyx",
    response_model=CarrierSessionOut,
    summary="Create a Telnyx session (TeXML)",
    responses={**TWIML_RESPONSES, **DRAINING_RESPONSES},
)
async def create_telnyx_session(
    body: PhoneSessionCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> Response:
    """TeXML as `text/xml`, or `{xml, session}` with `Accept: application/json`."""
    return await _create("telnyx", body, request, state, db, caller)


@router.post(
    "/v1/sessions/plivo",
    response_model=CarrierSessionOut,
    summary="Create a Plivo session (Plivo XML)",
    responses={**TWIML_RESPONSES, **DRAINING_RESPONSES},
)
async def create_plivo_session(
    body: PhoneSessionCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> Response:
    """Plivo XML as `text/xml`, or `{xml, session}` with `Accept: application/json`."""
    return await _create("plivo", body, request, state, db, caller)


async def _answer_inbound(
    carrier: str, request: Request, state, db, agent_id: str | None, form: dict, call_id_field: str
) -> Response:
    session, overflow, _refusal = await start_inbound(
        state,
        db,
        carrier,
        agent_id,
        to_number=form.get("To", ""),
        from_number=form.get("From", ""),
        call_id=form.get(call_id_field),
    )
    if session is None:  # no waiting in line on Telnyx or Plivo yet
        if overflow.number:
            return twiml_response(OVERFLOWS[carrier](overflow.number))
        return twiml_response(APOLOGIES[carrier](BUSY_APOLOGY))
    return twiml_response(answer_xml(carrier, state, request, session, None))


@router.post(
    "/v1/telnyx/voice",
    summary="Telnyx TeXML webhook: a call comes in",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES, **DRAINING_RESPONSES},
    response_class=Response,
)
async def telnyx_voice(
    request: Request, state: StateDep, db: DbDep, agent_id: AgentIdQuery
) -> Response:
    """Set this as the TeXML application's voice URL. The agent is the one the dialled number
    (`To`) is assigned to, or `?agent_id=`. Needs `telnyx-signature-ed25519`."""
    body = await request.body()
    check_telnyx(state.settings, request, body)
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    form = {name: values[0] for name, values in fields.items()}
    return await _answer_inbound("telnyx", request, state, db, agent_id, form, "CallSid")


@router.post(
    "/v1/plivo/voice",
    summary="Plivo answer URL: a call comes in",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES, **DRAINING_RESPONSES},
    response_class=Response,
)
async def plivo_voice(
    request: Request, state: StateDep, db: DbDep, agent_id: AgentIdQuery
) -> Response:
    """Set this as the Plivo application's answer URL (POST). The agent is the one the dialled
    number (`To`) is assigned to, or `?agent_id=`. Needs `X-Plivo-Signature-V3`."""
    fields = parse_qs(
        (await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True
    )
    check_plivo(state.settings, request, fields)
    form = {name: values[0] for name, values in fields.items()}
    return await _answer_inbound("plivo", request, state, db, agent_id, form, "CallUUID")


@router.websocket("/v1/sessions/telnyx/stream")
async def telnyx_stream(websocket: WebSocket):
    await serve_stream(websocket, CARRIERS["telnyx"])


@router.websocket("/v1/sessions/plivo/stream")
async def plivo_stream(websocket: WebSocket):
    await serve_stream(websocket, CARRIERS["plivo"])
