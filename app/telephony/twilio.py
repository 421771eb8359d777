"""Twilio: TwiML answers, the REST API (outbound calls, moving a waiting call), the stream serializer.

TwiML goes through Twilio's own SDK (webhook signatures: :mod:`app.telephony.signatures`). The REST API root is
`TWILIO_API_BASE_URL`, so tests (or a Twilio-compatible backend) can stand in.
"""

from contextlib import asynccontextmanager

from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from app.errors import APIError
from app.settings import Settings
from app.telephony.numbers import SIP_URI
from processors.twilio_marks import TwilioStreamSerializer

STREAM_PATH = "/v1/sessions/twilio/stream"
TOKEN_PARAMETER = "token"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


def connect_twiml(stream_url: str, token: str) -> str:
    """`<Response><Connect><Stream url=...><Parameter name="token" .../></Stream></Connect></Response>`."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    stream.parameter(name=TOKEN_PARAMETER, value=token)
    response.append(connect)
    return str(response)


def apology_twiml(message: str) -> str:
    """`<Response><Say>...</Say><Hangup/></Response>`: a clear refusal instead of a dead line."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def busy_twiml() -> str:
    """`<Response><Reject reason="busy"/></Response>`: the caller hears a busy signal, unbilled."""
    response = VoiceResponse()
    response.reject(reason="busy")
    return str(response)


def overflow_twiml(target: str) -> str:
    """`<Response><Dial>target</Dial></Response>` (a SIP URI in `<Sip>`): the call goes on to a
    person instead of a busy signal. Telnyx's TeXML reads it as well."""
    response = VoiceResponse()
    dial = Dial()
    if SIP_URI.match(target):
        dial.sip(target)
    else:
        dial.number(target)
    response.append(dial)
    return str(response)


def enqueue_twiml(queue_name: str, wait_url: str, action_url: str) -> str:
    """`<Response><Enqueue waitUrl=... action=...>queue_name</Enqueue></Response>`: the call
    waits in Twilio's queue, hearing what `wait_url` returns (re-requested whenever it has
    played); `action_url` hears why it left (`QueueResult`) and, after a `<Leave/>`, answers
    what comes next."""
    response = VoiceResponse()
    response.enqueue(
        queue_name, action=action_url, method="POST", wait_url=wait_url, wait_url_method="POST"
    )
    return str(response)


def hold_twiml(message: str | None, hold_audio_url: str) -> str:
    """A waiting call's `waitUrl` answer: `<Say>message</Say>` (if any), then the hold audio."""
    response = VoiceResponse()
    if message:
        response.say(message)
    response.play(hold_audio_url)
    return str(response)


def leave_twiml() -> str:
    """`<Response><Leave/></Response>`: the call leaves the queue (its `action` URL is asked next)."""
    response = VoiceResponse()
    response.leave()
    return str(response)


def empty_twiml() -> str:
    return str(VoiceResponse())


def credentials(settings: Settings) -> dict[str, str] | None:
    """Serializer-style credentials: the account SID with an auth token or an API key pair."""
    if not settings.twilio_account_sid:
        return None
    if settings.twilio_api_key_sid and settings.twilio_api_key_secret:
        return {
            "api_key_sid": settings.twilio_api_key_sid,
            "api_key_secret": settings.twilio_api_key_secret,
        }
    if settings.twilio_auth_token:
        return {"auth_token": settings.twilio_auth_token}
    return None


def require_credentials(settings: Settings) -> dict[str, str]:
    """The configured credentials; 422 when there are none."""
    creds = credentials(settings)
    if creds is None:
        missing = [
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID + TWILIO_API_KEY_SECRET)",
        ]
        raise APIError(
            422,
            "missing_credentials",
            "outbound calls need Twilio credentials in the server's environment",
            {"missing": missing},
        )
    return creds


@asynccontextmanager
async def rest_client(settings: Settings, creds: dict[str, str]):
    """Twilio's REST client for these credentials and the configured API root, closed on exit."""
    username, password = (
        (creds["api_key_sid"], creds["api_key_secret"])
        if "api_key_sid" in creds
        else (settings.twilio_account_sid, creds["auth_token"])
    )
    http_client = AsyncTwilioHttpClient()
    client = Client(username, password, settings.twilio_account_sid, http_client=http_client)
    client.api.base_url = settings.twilio_api_base_url
    try:
        yield client
    finally:
        await http_client.close()


async def place_call(
    settings: Settings,
    *,
    to: str,
    from_: str,
    url: str,
    status_callback: str,
    amd_callback: str | None = None,
    timeout: int | None = None,
) -> str:
    """Ask Twilio's REST API to place a call; its Call SID. 502 if Twilio refuses. With
    `amd_callback`, Twilio's asynchronous answering-machine detection posts its verdict there
    (once a machine's greeting has ended, so a message lands after the beep). `timeout`: how
    many seconds it rings (Twilio's default otherwise, 60)."""
    creds = require_credentials(settings)
    detection = (
        {
            "machine_detection": "DetectMessageEnd",
            "async_amd": "true",
            "async_amd_status_callback": amd_callback,
            "async_amd_status_callback_method": "POST",
        }
        if amd_callback
        else {}
    )
    try:
        async with rest_client(settings, creds) as client:
            call = await client.calls.create_async(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=STATUS_EVENTS,
                **detection,
                **({"timeout": timeout} if timeout else {}),
            )
    except TwilioRestException as exc:
        logger.warning(f"Twilio refused the outbound call to {to}: {exc.status} {exc.msg}")
        raise APIError(
            502,
            "twilio_error",
            f"Twilio refused the call: {exc.msg}",
            {"twilio_status": exc.status},
        ) from None
    return call.sid


async def end_call(settings: Settings, call_sid: str, message: str | None = None) -> None:
    """End a call through the REST API: hang up, or first say `message` (new TwiML for the call)."""
    creds = require_credentials(settings)
    async with rest_client(settings, creds) as client:
        if message:
            await client.calls(call_sid).update_async(twiml=apology_twiml(message))
        else:
            await client.calls(call_sid).update_async(status="completed")


async def dequeue(settings: Settings, queue_sid: str, call_sid: str, url: str) -> bool:
    """Move a waiting call out of its queue to the TwiML at `url` (Twilio's Queue Member
    resource, addressed by the call's SID); False if it is no longer in the queue (it hung up)."""
    creds = require_credentials(settings)
    async with rest_client(settings, creds) as client:
        try:
            await client.queues(queue_sid).members(call_sid).update_async(url=url, method="POST")
        except TwilioRestException as exc:
            if exc.status == 404:
                return False
            raise
    return True


def stream_serializer(
    settings: Settings, stream_sid: str, call_sid: str | None
) -> TwilioStreamSerializer:
    """Pipecat's Twilio serializer (with marks); it hangs up through the REST API when it can."""
    creds = credentials(settings)
    if creds is None or not call_sid:
        logger.warning(
            "no Twilio credentials or call SID: the server can't hang up this call itself"
        )
        return TwilioStreamSerializer(
            stream_sid, params=TwilioStreamSerializer.InputParams(auto_hang_up=False)
        )
    return TwilioStreamSerializer(
        stream_sid,
        call_sid,
        settings.twilio_account_sid,
        base_url=settings.twilio_api_base_url,
        **creds,
    )
