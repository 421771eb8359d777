"""Transfers of live Twilio calls to a person: cold (the call is redirected with `<Dial>`) and warm.

A warm transfer, run by the node that holds the call while the caller stays with the agent:

1. The agent says "please hold", its LLM summarises the transcript so far, and a `call_transfers`
   row keeps the summary and how to speak it.
2. Twilio's REST API dials the person (`Timeout`: the tool's `answer_timeout_secs`) with signed
   callbacks to `/v1/twilio/transfers/{id}/answer` and `/status`, which any node may serve.
3. When the person answers, the `answer` callback moves the row `dialing → answered` and answers
   TwiML: `<Connect><Stream>` to our `/v1/twilio/transfers/stream` (a single-use token), where
   the agent's TTS speaks the summary in the agent's voice and then closes the stream, so Twilio
   goes on to `<Dial><Conference>`. (A speech-to-speech config has no TTS: `<Say>` reads it.)
   No answer, busy or failed (the `status` callback), or nothing by the deadline, moves the row
   to `failed` instead.
4. The node holding the call watches the row: answered, it moves the caller into the same
   conference (REST update), where the caller hears hold music until the person joins; failed,
   the tool's result says so and the agent carries on with the caller.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import EndFrame, TTSSpeakFrame
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from app.calls.tokens import TokenError, TokenSigner
from app.errors import APIError, Refusal
from app.settings import Settings
from app.state import AppState
from app.storage import transfers as store
from app.storage.db import Database
from app.storage.models import CallTransfer
from app.telephony import twilio
from app.telephony.numbers import SIP_URI, dial_refusal
from app.urls import own_base_url
from pipelines import services
from pipelines.builder import build_announcement
from pipelines.config import PipelineConfig
from processors.twilio_marks import TwilioStreamSerializer

CALLBACK_GRACE_SECS = 10.0
"""How long past the ring timeout the node waits for Twilio's callback before giving up itself."""
POLL_SECS = 0.25
STREAM_PATH = "/v1/twilio/transfers/stream"
TOKEN_KIND = "transfer"
TOKEN_TTL_SECS = 60
SAMPLE_RATE = 8000
SUMMARY_MAX_CHARS = 1000
HOLD_MESSAGE = "Please hold while I connect you."
SUMMARY_INSTRUCTION = (
    "You are handing a phone call over to a human colleague. From the transcript, tell them in two "
    "or three short spoken sentences who is calling and what they need, with the facts they gave "
    "(names, numbers, dates). Plain sentences only, no lists or markup, in the language whose code is {language}."
)
SUMMARY_TIMEOUT_SECS = 20.0
SUMMARY_FALLBACK = "You have a call transferred from the assistant."
CALLER_GONE = "Sorry, the caller is no longer on the line. Goodbye."
FAILED_STATUSES = {
    "no-answer": "did not answer",
    "busy": "was busy",
    "failed": "could not be called",
    "canceled": "could not be called",
}
"""The human leg's call statuses that fail a transfer, and what they mean."""


def dial_twiml(target: str) -> str:
    """`<Dial>` to a phone number, or to a SIP URI."""
    response = VoiceResponse()
    if SIP_URI.match(target):
        response.dial().sip(target)
    else:
        response.dial(target)
    return str(response)


async def transfer_twilio_call(settings: Settings, call_sid: str, number: str) -> str | None:
    """Move a live Twilio call to `number` (REST call update with `<Dial>` TwiML); an error or None.
    A number the server may not dial (now) is refused without dialing."""
    if reason := dial_refusal(settings, number, sip=True):
        logger.warning(f"refused to transfer call {call_sid}: {reason}")
        return f"the transfer was refused: {reason}"
    return await _update(settings, call_sid, dial_twiml(number), "transfer")


def conference_twiml(
    name: str, *, starts: bool, say: str | None = None, before: VoiceResponse | None = None
) -> str:
    """`before`'s verbs or `<Say>` (if any), then `<Dial><Conference>`: whoever `starts` it ends
    the hold music; the conference ends when either party leaves."""
    response = before or VoiceResponse()
    if say:
        response.say(say)
    dial = Dial()
    dial.conference(name, start_conference_on_enter=starts, end_conference_on_exit=True)
    response.append(dial)
    return str(response)


def conference_name(transfer_id: str) -> str:
    return f"switchboard-{transfer_id}"


async def summarise(config: PipelineConfig, conversation: str, language: str) -> str:
    """The agent's LLM's short spoken summary of `conversation` ("Caller: …" / "Agent: …" lines);
    a fixed line if it fails or takes over `SUMMARY_TIMEOUT_SECS`."""
    stage = config.llm or config.analysis
    if stage is None or not conversation.strip():
        return SUMMARY_FALLBACK
    llm = services.create(
        stage, services.ServiceContext(system_prompt="", voice_id="", language=language)
    )
    try:
        answer = await asyncio.wait_for(
            llm.run_inference(
                LLMContext(messages=[{"role": "user", "content": f"Transcript:\n{conversation}"}]),
                system_instruction=SUMMARY_INSTRUCTION.format(language=language),
            ),
            SUMMARY_TIMEOUT_SECS,
        )
    except Exception as exc:
        logger.warning(f"no transfer summary: {type(exc).__name__}: {exc}")
        return SUMMARY_FALLBACK
    return (answer or "").strip()[:SUMMARY_MAX_CHARS] or SUMMARY_FALLBACK


async def warm_transfer(
    settings: Settings,
    db: Database,
    *,
    account_id: str,
    session_id: str,
    call_sid: str,
    caller_id: str,
    number: str,
    answer_timeout_secs: int,
    config: PipelineConfig,
    conversation: str,
    voice: str,
    language: str,
    hold: Callable[[str], Awaitable[None]],
    moving: Callable[[], None],
) -> str | None:
    """Tell the caller to hold (`hold` speaks), dial `number` with a summary of `conversation`, wait for
    the person, and move the caller (`call_sid`) into a conference with them (calling `moving`
    first); an error for the LLM, or None once the caller is on their way. Cancelled (the call
    ended), the person's leg is hung up."""
    if reason := dial_refusal(settings, number, sip=True):
        logger.warning(f"session {session_id}: refused a warm transfer: {reason}")
        return f"the transfer was refused: {reason}"
    await hold(HOLD_MESSAGE)
    summary = await summarise(config, conversation, language)
    async with db.sessions() as session:
        transfer = await store.create(
            session,
            account_id=account_id,
            session_id=session_id,
            to_number=number,
            summary=summary,
            pipeline=config.name if config.tts else None,
            voice=voice,
            language=language,
        )
    base = f"{own_base_url(settings)}/v1/twilio/transfers/{transfer.id}"
    leg_sid = None
    try:
        leg_sid = await twilio.place_call(
            settings,
            to=number,
            from_=caller_id,
            url=f"{base}/answer",
            status_callback=f"{base}/status",
            timeout=answer_timeout_secs,
        )
        async with db.sessions() as session:
            await store.set_call_sid(session, transfer.id, leg_sid)
        logger.info(f"session {session_id}: warm transfer {transfer.id} is ringing {number}")
        outcome = await _outcome(db, transfer.id, answer_timeout_secs + CALLBACK_GRACE_SECS)
    except APIError as exc:
        await _fail(db, transfer.id, exc.body.message)
        return f"the transfer failed: {exc.body.message}"
    except asyncio.CancelledError:
        # The call ended: a later answer gets an apology, and a known leg stops ringing.
        if await _fail(db, transfer.id, "the call ended", status="cancelled") and leg_sid:
            await _update(settings, leg_sid, None, "hang-up")
        raise
    if outcome.status == "dialing":
        if await _fail(db, transfer.id, "no answer in time"):
            await _update(settings, leg_sid, None, "hang-up")
            return f"the transfer failed: {number} did not answer within {answer_timeout_secs} s"
        outcome = await _outcome(db, transfer.id, 0)  # answered or failed just now
    if outcome.status not in ("answered", "announced"):
        return f"the transfer failed: {outcome.error or 'no answer'}"
    moving()
    error = await _update(
        settings, call_sid, conference_twiml(conference_name(transfer.id), starts=False), "bridge"
    )
    if error:
        await _update(settings, leg_sid, None, "hang-up")
        return error
    logger.info(f"session {session_id}: warm transfer {transfer.id} bridged to {number}")
    return None


async def _outcome(db: Database, transfer_id: str, within: float) -> CallTransfer:
    """The transfer once it has left `dialing`, or still dialing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        async with db.sessions() as session:
            transfer = await store.get(session, transfer_id)
        assert transfer is not None  # created by the caller
        if transfer.status != "dialing" or time.monotonic() >= deadline:
            return transfer
        await asyncio.sleep(POLL_SECS)


async def _fail(db: Database, transfer_id: str, error: str, status: str = "failed") -> bool:
    async with db.sessions() as session:
        return await store.move(session, transfer_id, status, error)


async def _update(settings: Settings, call_sid: str, twiml: str | None, what: str) -> str | None:
    """New TwiML for a call, or (no TwiML) end it; an error for the LLM, or None."""
    credentials = twilio.credentials(settings)
    if credentials is None:
        return "the server has no Twilio credentials"
    try:
        async with twilio.rest_client(settings, credentials) as client:
            if twiml is None:
                await client.calls(call_sid).update_async(status="completed")
            else:
                await client.calls(call_sid).update_async(twiml=twiml)
    except TwilioRestException as exc:
        logger.warning(f"Twilio refused the {what} of call {call_sid}: {exc.status} {exc.msg}")
        return f"Twilio refused the transfer: {exc.msg}"
    return None


async def answered(
    db: Database, tokens: TokenSigner, transfer_id: str, stream_url: str
) -> str | None:
    """The person picked up (the `answer` callback): TwiML that has them hear the summary (our
    media stream at `stream_url`, in the agent's voice; or `<Say>`) and then joins them to the
    caller's conference, or an apology if the caller is gone; None for an unknown transfer."""
    async with db.sessions() as session:
        transfer = await store.get(session, transfer_id)
        if transfer is None:
            return None
        if not await store.move(session, transfer_id, "answered"):
            return twilio.apology_twiml(CALLER_GONE)
    room = conference_name(transfer_id)
    if transfer.pipeline is None:
        return conference_twiml(room, starts=True, say=transfer.summary)
    token = tokens.issue(TOKEN_KIND, {"xfr": transfer_id}, time.time() + TOKEN_TTL_SECS)
    response = VoiceResponse()
    connect = Connect()
    connect.stream(url=stream_url).parameter(name=twilio.TOKEN_PARAMETER, value=token)
    response.append(connect)  # Twilio goes on to the next verb once we close the stream
    return conference_twiml(room, starts=True, before=response)


async def open_summary(state: AppState, token: str | None) -> CallTransfer:
    """The answered transfer a summary stream's token opens (once), or a `Refusal`."""
    try:
        claims = state.tokens.verify(token or "", TOKEN_KIND)
    except TokenError as exc:
        raise Refusal(4401, "invalid_token", f"transfer token refused: {exc}") from None
    async with state.db.sessions() as session:
        transfer = await store.get(session, str(claims.get("xfr")))
        if transfer is None or not await store.move(
            session, transfer.id, "announced", from_status="answered"
        ):
            raise Refusal(4409, "token_used", "transfer token refused: it was already used")
    return transfer


async def speak_summary(
    state: AppState, websocket: WebSocket, stream_id: str, transfer: CallTransfer
) -> None:
    """Say the transfer's summary to the person over their media stream, in the agent's voice,
    then close it (Twilio then joins them to the conference)."""
    assert transfer.pipeline is not None  # answered() sends a stream only then
    serializer = TwilioStreamSerializer(
        stream_id, params=TwilioStreamSerializer.InputParams(auto_hang_up=False)
    )
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=False,  # the person listens
            audio_out_enabled=True,
            add_wav_header=False,
            audio_out_10ms_chunks=2,
            serializer=serializer,
        ),
    )
    config = state.catalog.get(transfer.pipeline)
    pipeline = build_announcement(config, transfer.voice, transfer.language, transport)
    assert pipeline is not None  # the config has a TTS stage (checked when the transfer began)
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    await worker.queue_frames([TTSSpeakFrame(transfer.summary), EndFrame(reason="announced")])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


async def leg_status(db: Database, transfer_id: str, call_status: str) -> bool:
    """A status callback for the human's leg: no answer, busy or failed fail a dialing transfer.
    False for an unknown transfer."""
    async with db.sessions() as session:
        if await store.get(session, transfer_id) is None:
            return False
        if reason := FAILED_STATUSES.get(call_status):
            await store.move(session, transfer_id, "failed", f"the person {reason}")
    return True
