"""The carrier credentials test servers run with, and requests signed as the carriers sign them.

The `twilio_rest`, `twilio_server` and `tw` fixtures (tests/conftest.py) use these.
"""

import httpx

from tests.fakes.carrier_webhooks import TelnyxSigner, twilio_post

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio_test_auth_token"
TELNYX = TelnyxSigner()
PLIVO_AUTH_TOKEN = "plivo_test_auth_token"
SECRET = "relay-token-test-secret"
CALLER, NUMBER = "+15550001111", "+15550002222"


def twilio_env(scripted_llm, twilio_rest) -> dict[str, str]:
    """A server's environment: Twilio pointed at the local REST fake, every carrier's signing
    key, a known token secret and the scripted LLM."""
    return {
        "SCRIPTED_LLM_URL": scripted_llm.url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_rest.url,
        "TELNYX_PUBLIC_KEY": TELNYX.public_key,
        "PLIVO_AUTH_TOKEN": PLIVO_AUTH_TOKEN,
        "SWITCHBOARD_SECRET_KEY": SECRET,
    }


def signed_post(server, path: str, form: dict[str, str], token: str = AUTH_TOKEN) -> httpx.Response:
    """A form POST to the server signed as Twilio signs its webhooks."""
    return twilio_post(server.url + path, form, token)


def twilio_session(api, agent_id: str, **fields) -> tuple[str, dict]:
    """TwiML and session for a call, as an API client gets them."""
    response = api.post(
        "/v1/sessions/twilio",
        json={"agentId": agent_id, "from": CALLER, "to": NUMBER, **fields},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    session = response.json()["session"]
    assert session["status"] == "created" and session["websocket_url"] is None
    return response.json()["twiml"], session
