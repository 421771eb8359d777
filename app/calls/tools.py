"""What the agent's tools do: argument checks, webhook calls, the Twilio transfer.

A tool definition (stored on the agent, or in an inline call's body) has ``name``,
``description``, ``parameters`` (JSON Schema) and ``type``: ``client`` (the WebSocket
client runs it), ``webhook`` (the server POSTs the arguments to ``url``), or a
built-in, ``end_call`` or ``transfer_call`` (to ``phone_number``). A failure never
raises: it becomes ``{"error": ...}`` for the LLM, so the agent can say so.
"""

import json
import time
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import VoiceResponse

from app import outbound
from app.settings import Settings
from app.telephony.numbers import SIP_URI, dial_refusal
from app.telephony.twilio import credentials as twilio_credentials
from app.telephony.twilio import rest_client
from app.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

DEFAULT_TIMEOUT_SECS = 10.0


def argument_errors(schema: dict[str, Any], arguments: Any) -> str | None:
    """Why `arguments` don't fit the tool's JSON Schema; None when they do."""
    errors = sorted(
        Draft202012Validator(schema).iter_errors(arguments), key=lambda e: list(e.absolute_path)
    )
    if not errors:
        return None
    return "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}" for e in errors
    )


async def call_webhook(
    settings: Settings,
    tool: dict[str, Any],
    arguments: dict[str, Any],
    *,
    session_id: str,
    call_id: str,
) -> Any:
    """POST the arguments as JSON to the tool's URL (through the outbound policy); its JSON
    answer, or an error for the LLM."""
    timeout = tool.get("timeout_secs") or DEFAULT_TIMEOUT_SECS
    body = json.dumps(arguments).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Switchboard-Session": session_id,
        "X-Switchboard-Tool": tool["name"],
        "X-Switchboard-Tool-Call": call_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(tool["secret"], timestamp, body),
    }
    try:
        async with outbound.client(settings, timeout) as client:
            response = await client.post(tool["url"], content=body, headers=headers)
    except httpx.TimeoutException:
        return {"error": f"tool '{tool['name']}' did not answer within {timeout:g}s"}
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        logger.warning(f"session {session_id}: webhook tool '{tool['name']}' failed: {exc!r}")
        if outbound.refused(exc):
            return {"error": f"tool '{tool['name']}' has an address the server may not reach"}
        return {"error": f"tool '{tool['name']}' could not be reached"}
    if response.status_code >= 400:
        return {
            "error": f"tool '{tool['name']}' failed with HTTP {response.status_code}",
            "body": response.text[:500],
        }
    try:
        return response.json()
    except ValueError:
        return {"result": response.text[:4000]}


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
    credentials = twilio_credentials(settings)
    if credentials is None:
        return "the server has no Twilio credentials"
    try:
        async with rest_client(settings, credentials) as client:
            await client.calls(call_sid).update_async(twiml=dial_twiml(number))
    except TwilioRestException as exc:
        logger.warning(f"Twilio refused to transfer call {call_sid}: {exc.status} {exc.msg}")
        return f"Twilio refused the transfer: {exc.msg}"
    return None
