"""Twilio's callbacks for the human's leg of a warm transfer (see :mod:`app.telephony.transfer`).

Like every Twilio callback they carry no API key but must carry a valid `X-Twilio-Signature`
(403 otherwise); the transfer's id in the path names the row, which any node can read.
"""

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from loguru import logger

from app.api.twilio import TWIML_RESPONSES, signed_form, twiml_response
from app.deps import StateDep
from app.errors import ERROR_RESPONSES, Refusal, not_found
from app.state import AppState
from app.telephony import transfer
from app.telephony.signatures import SIGNED_RESPONSES
from app.telephony.stream import CARRIERS, read_start
from app.urls import websocket_base

router = APIRouter(tags=["telephony"], responses=ERROR_RESPONSES)


@router.post(
    "/v1/twilio/transfers/{transfer_id}/answer",
    summary="Twilio callback: the person a warm transfer rang answered",
    responses={**TWIML_RESPONSES, **SIGNED_RESPONSES},
    response_class=Response,
)
async def transfer_answer(transfer_id: str, request: Request, state: StateDep) -> Response:
    """TwiML that has the person hear the call's summary, then joins them to the caller's
    conference (or apologises if the caller is no longer waiting)."""
    await signed_form(state, request)
    stream_url = f"{websocket_base(state.settings, request)}{transfer.STREAM_PATH}"
    twiml = await transfer.answered(state.db, state.tokens, transfer_id, stream_url)
    if twiml is None:
        raise not_found("transfer", transfer_id)
    return twiml_response(twiml)


@router.post(
    "/v1/twilio/transfers/{transfer_id}/status",
    status_code=204,
    summary="Twilio callback: status of the person's leg of a warm transfer",
    responses=SIGNED_RESPONSES,
    response_class=Response,
)
async def transfer_status(transfer_id: str, request: Request, state: StateDep) -> Response:
    """No answer, busy or failed: the transfer fails and the agent carries on with the caller."""
    form = await signed_form(state, request)
    if not await transfer.leg_status(state.db, transfer_id, form.get("CallStatus", "")):
        raise not_found("transfer", transfer_id)
    return Response(status_code=204)


@router.websocket(transfer.STREAM_PATH)
async def transfer_summary_stream(websocket: WebSocket):
    """Twilio Media Streams for the person's leg: the summary in the agent's voice, once per
    transfer (a single-use token in the `start` message), then the socket closes."""
    state: AppState = websocket.app.state.switchboard
    await websocket.accept()
    try:
        start = await read_start(websocket, CARRIERS["twilio"])
        if start is None:
            return
        answered = await transfer.open_summary(state, start.token)
    except Refusal as refusal:
        logger.warning(f"transfer summary stream refused ({refusal.code}): {refusal.message}")
        await websocket.close(refusal.close_code, refusal.message[:120])
        return
    await transfer.speak_summary(state, websocket, start.stream_id, answered)
