"""Carrier media streams (`WS /v1/sessions/{twilio,telnyx,plivo}/stream`): handshake, token, call.

The carrier connects and sends its ``start`` message (Twilio sends ``connected``
first). We read it ourselves, take the relay token (Twilio:
``start.customParameters.token``; Telnyx and Plivo: the stream URL's ``token``
query, which they keep), open the relay (:func:`app.telephony.relay.open_relay`)
and run the call with the carrier's Pipecat serializer: 8 kHz on the wire, and inside
8 kHz too when every service hearing the caller takes it (`services.phone_input_rate`: no
resampling), else the pipeline's own rate (16 kHz, what Whisper needs). A refusal closes the
socket with a code and reason and logs why; nothing has been started by then.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import WebSocket
from loguru import logger
from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.plivo import PlivoFrameSerializer
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from starlette.websockets import WebSocketState

from app.calls.audio_pacing import with_grouped_audio, with_real_time_audio
from app.errors import Refusal
from app.logs import bind_call
from app.settings import Settings
from app.state import AppState
from app.storage import telephony as store
from app.telephony import twilio
from app.telephony.call import PhoneCallSession
from app.telephony.relay import open_relay
from pipelines import pipecat_compat, services
from pipelines.registry import build_processors
from processors.twilio_marks import TwilioMarks

START_TIMEOUT_SECS = 10.0
MAX_MESSAGES_BEFORE_START = 5
CARRIER_SAMPLE_RATE = 8000


@dataclass
class StreamStart:
    stream_id: str
    call_id: str | None
    token: str | None
    encoding: str = "PCMU"


@dataclass
class Carrier:
    name: str
    parse_start: Callable[[dict, WebSocket], StreamStart | None]
    """The stream's start data, or None if the message is not the start."""
    serializer: Callable[[Settings, StreamStart], FrameSerializer]
    marks: bool = False


def _twilio_start(message: dict, websocket: WebSocket) -> StreamStart | None:
    if message.get("event") != "start":
        return None
    start = message.get("start") or {}
    parameters = start.get("customParameters") or {}
    return StreamStart(
        stream_id=start.get("streamSid") or message.get("streamSid") or "",
        call_id=start.get("callSid"),
        token=parameters.get(twilio.TOKEN_PARAMETER),
    )


def _telnyx_start(message: dict, websocket: WebSocket) -> StreamStart | None:
    if message.get("event") != "start":
        return None
    start = message.get("start") or {}
    encoding = ((start.get("media_format") or {}).get("encoding") or "PCMU").upper()
    if encoding not in ("PCMU", "PCMA"):
        raise Refusal(
            4400,
            "unsupported_encoding",
            f"media encoding {encoding} is not supported (PCMU or PCMA)",
        )
    token = (start.get("custom_parameters") or {}).get("token") or websocket.query_params.get(
        "token"
    )
    return StreamStart(
        message.get("stream_id") or "", start.get("call_control_id"), token, encoding
    )


def _plivo_start(message: dict, websocket: WebSocket) -> StreamStart | None:
    if message.get("event") != "start":
        return None
    start = message.get("start") or {}
    return StreamStart(
        start.get("streamId") or "", start.get("callId"), websocket.query_params.get("token")
    )


def _telnyx_serializer(settings: Settings, start: StreamStart) -> FrameSerializer:
    hang_up = bool(settings.telnyx_api_key and start.call_id)
    return TelnyxFrameSerializer(
        start.stream_id,
        start.encoding,
        start.encoding,
        start.call_id,
        settings.telnyx_api_key,
        params=TelnyxFrameSerializer.InputParams(auto_hang_up=hang_up),
    )


def _plivo_serializer(settings: Settings, start: StreamStart) -> FrameSerializer:
    hang_up = bool(settings.plivo_auth_id and settings.plivo_auth_token and start.call_id)
    return PlivoFrameSerializer(
        start.stream_id,
        start.call_id,
        settings.plivo_auth_id,
        settings.plivo_auth_token,
        params=PlivoFrameSerializer.InputParams(auto_hang_up=hang_up),
    )


def with_prompt_caller_audio(serializer: FrameSerializer) -> FrameSerializer:
    """The serializer, upsampling the caller's 8 kHz audio with soxr's quick quality.

    Pipecat's carrier serializers use a very-high-quality soxr stream, which holds the audio
    back ~50 ms and hands it on in ~95 ms blocks: every VAD decision (end of turn, barge-in)
    came that much later. The quick quality passes each 20 ms frame on at once, and Whisper
    makes the same words of it (`benchmarks/whisper_window.py` on both: 8.2 % word errors).
    The agent's audio keeps Pipecat's resampler: it comes in whole sentences and the caller hears it.
    """
    pipecat_compat.set_input_resampler(serializer, SOXRStreamAudioResampler(quality="QQ"))
    return serializer


CARRIERS = {
    "twilio": Carrier(
        "twilio",
        _twilio_start,
        lambda settings, s: twilio.stream_serializer(settings, s.stream_id, s.call_id),
        True,
    ),
    "telnyx": Carrier("telnyx", _telnyx_start, _telnyx_serializer),
    "plivo": Carrier("plivo", _plivo_start, _plivo_serializer),
}


async def read_start(websocket: WebSocket, carrier: Carrier) -> StreamStart | None:
    """The start message's data; None if the carrier hung up first."""
    for _ in range(MAX_MESSAGES_BEFORE_START):
        try:
            message = await asyncio.wait_for(websocket.receive(), START_TIMEOUT_SECS)
        except TimeoutError:
            raise Refusal(
                4400, "no_start", f"no start message within {START_TIMEOUT_SECS:.0f}s"
            ) from None
        if message["type"] == "websocket.disconnect":
            return None
        try:
            data = json.loads(message.get("text") or message.get("bytes") or "")
        except ValueError:
            raise Refusal(4400, "invalid_json", "stream messages must be JSON") from None
        try:
            start = carrier.parse_start(data, websocket) if isinstance(data, dict) else None
        except (AttributeError, TypeError):  # a field of the wrong type
            raise Refusal(4400, "invalid_start", "the start message is malformed") from None
        if start is not None:
            if not start.stream_id or not isinstance(start.stream_id, str):
                raise Refusal(4400, "invalid_start", "the start message names no stream")
            return start
    raise Refusal(
        4400,
        "no_start",
        f"expected a start message within the first {MAX_MESSAGES_BEFORE_START} messages",
    )


async def serve_stream(websocket: WebSocket, carrier: Carrier) -> None:
    state: AppState = websocket.app.state.switchboard
    await websocket.accept()
    try:
        start = await read_start(websocket, carrier)
        if start is None:
            logger.info(f"{carrier.name} stream closed before its start message")
            return
        session, agent = await open_relay(state, start.token)
    except Refusal as refusal:
        logger.warning(f"{carrier.name} stream refused ({refusal.code}): {refusal.message}")
        await websocket.close(refusal.close_code, refusal.message[:120])
        return

    bind_call(session.id, session.agent_id, session.account_id)
    async with state.db.sessions() as db:
        await store.stream_started(db, session.id, carrier.name, start.call_id)
    logger.info(
        f"{carrier.name} stream {start.stream_id} (call {start.call_id}) joined session {session.id}"
    )
    marks = TwilioMarks(start.stream_id) if carrier.marks else None
    config = state.catalog.get(agent.pipeline)
    processors = build_processors(config)
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            # 20 ms media frames, as carriers send and expect them.
            audio_out_10ms_chunks=2,
            serializer=with_grouped_audio(
                with_real_time_audio(
                    with_prompt_caller_audio(carrier.serializer(state.settings, start))
                )
            ),
            **processors.transport_params(),
        ),
    )
    call = PhoneCallSession(
        state,
        session=session,
        agent=agent,
        config=config,
        processors=processors,
        transport=transport,
        audio_in_sample_rate=services.phone_input_rate(config),
        audio_out_sample_rate=CARRIER_SAMPLE_RATE,
        marks=marks,
    )
    await call.run()
    async with state.db.sessions() as db:
        await store.stream_ended(db, session.id)
    if WebSocketState.CONNECTED == websocket.application_state == websocket.client_state:
        # The pipeline closes the socket when it ends; still open means it never ran.
        await websocket.close(1011, "the call could not start")
