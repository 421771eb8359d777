"""Telnyx and Plivo: session answers (TeXML / Plivo XML) and their media-stream WebSockets.

Same flow as Twilio (see :mod:`app.telephony`) with Pipecat's Telnyx and Plivo
serializers. Both carriers keep the stream URL's query string, so the relay token
rides there (`?token=`); the same signature, expiry and single-use rules apply.
"""

from urllib.parse import quote
from xml.etree import ElementTree

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from twilio.twiml.voice_response import Connect, VoiceResponse

from app.api.agents import load_agent
from app.api.sessions import SessionOut, websocket_base
from app.api.twilio import TWIML_RESPONSES, PhoneSessionCreate, phone_session_out, twiml_response
from app.deps import CallerDep, DbDep, StateDep
from app.errors import DRAINING_RESPONSES, ERROR_RESPONSES
from app.telephony.phone_calls import start_phone_session
from app.telephony.relay import issue_relay_token
from app.telephony.stream import CARRIERS, serve_stream

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
        response, "Stream",
        bidirectional="true", keepCallAlive="true", contentType="audio/x-mulaw;rate=8000",
    )
    stream.text = stream_url
    return '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(response, encoding="unicode")


ANSWERS = {"telnyx": texml, "plivo": plivo_xml}


async def _create(carrier: str, body: PhoneSessionCreate, request: Request, state, db, caller) -> Response:
    agent = await load_agent(db, caller, body.agent_id)
    session, _call = await start_phone_session(
        state, db, agent, carrier=carrier, direction="inbound",
        from_number=body.from_number, to_number=body.to_number, instance_id=body.instance_id,
    )
    token = issue_relay_token(state, session, body.instance_id)
    xml = ANSWERS[carrier](f"{websocket_base(state, request)}/v1/sessions/{carrier}/stream?token={quote(token)}")
    if "application/json" in request.headers.get("accept", ""):
        out = CarrierSessionOut(xml=xml, session=phone_session_out(state, request, session))
        return JSONResponse(out.model_dump(mode="json"))
    return twiml_response(xml)


@router.post(
    "/v1/sessions/telnyx", response_model=CarrierSessionOut, summary="Create a Telnyx session (TeXML)",
    responses={**TWIML_RESPONSES, **DRAINING_RESPONSES},
)
async def create_telnyx_session(
    body: PhoneSessionCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> Response:
    """TeXML as `text/xml`, or `{xml, session}` with `Accept: application/json`."""
    return await _create("telnyx", body, request, state, db, caller)


@router.post(
    "/v1/sessions/plivo", response_model=CarrierSessionOut, summary="Create a Plivo session (Plivo XML)",
    responses={**TWIML_RESPONSES, **DRAINING_RESPONSES},
)
async def create_plivo_session(
    body: PhoneSessionCreate, request: Request, state: StateDep, db: DbDep, caller: CallerDep
) -> Response:
    """Plivo XML as `text/xml`, or `{xml, session}` with `Accept: application/json`."""
    return await _create("plivo", body, request, state, db, caller)


@router.websocket("/v1/sessions/telnyx/stream")
async def telnyx_stream(websocket: WebSocket):
    await serve_stream(websocket, CARRIERS["telnyx"])


@router.websocket("/v1/sessions/plivo/stream")
async def plivo_stream(websocket: WebSocket):
    await serve_stream(websocket, CARRIERS["plivo"])
