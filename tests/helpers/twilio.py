"""The carrier credentials test servers run with, and requests signed as the carriers sign them.

The `twilio_rest`, `twilio_server` and `tw` fixtures (tests/conftest.py) use these.
"""

import asyncio
import time
from urllib.parse import urlsplit

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


class CallPlayer:
    """Plays the far end of the outbound calls a server places through the fake REST API once
    it is entered: each
    new call ends after `hold` seconds with `outcome(number, attempt)` (a Twilio call status:
    `completed`, `no-answer`, `busy`), its status callback signed and posted to `server` (which
    a test may switch to another node). `answer`, if given, is awaited for a `completed` call
    first, with the server and the call's REST request (to join its media stream)."""

    def __init__(self, server, rest, outcome, hold: float, answer=None):
        self.server = server
        self.rest = rest
        self.outcome = outcome
        self.hold = hold
        self.answer = answer
        self.calls: list[tuple[str, float, float]] = []
        """(number, placed, ended) of every call played to its end."""
        self._tasks: set[asyncio.Task] = set()
        self._watcher: asyncio.Task | None = None

    async def __aenter__(self) -> "CallPlayer":
        already = len(self.rest.created_calls())  # calls placed before are not this player's
        self._watcher = asyncio.create_task(self._watch(already))
        return self

    async def __aexit__(self, *exc) -> None:
        for task in (self._watcher, *self._tasks):
            if task:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._watcher, *self._tasks) if t), return_exceptions=True
        )

    def dialled(self) -> list[str]:
        """The numbers called so far, in order (one entry per call)."""
        return [r.value("To") or "" for r in self.rest.created_calls()]

    async def _watch(self, seen: int) -> None:
        while True:
            created = self.rest.created_calls()
            for index in range(seen, len(created)):
                task = asyncio.create_task(self._play(created[index], created[: index + 1]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            seen = len(created)
            await asyncio.sleep(0.02)

    async def _play(self, request, so_far) -> None:
        number = request.value("To")
        attempt = sum(1 for r in so_far if r.value("To") == number)
        status = self.outcome(number, attempt)
        if status == "completed" and self.answer:
            await self.answer(self.server, request)
        await asyncio.sleep(self.hold)
        path = urlsplit(request.value("StatusCallback")).path
        form = {"AccountSid": ACCOUNT_SID, "To": number, "CallStatus": status}
        self.calls.append((number, request.at, time.time()))
        response = await asyncio.to_thread(signed_post, self.server, path, form)
        assert response.status_code == 204, response.text

    def most_at_once(self) -> int:
        """The most calls that were under way at one moment."""
        edges = sorted([(p, 1) for _, p, _ in self.calls] + [(e, -1) for _, _, e in self.calls])
        running = most = 0
        for _, step in edges:
            running += step
            most = max(most, running)
        return most


async def phone_question(api: httpx.Client, agent_id: str, question: str) -> tuple[str, bytes]:
    """A Twilio call made through `POST /v1/sessions/twilio` in which the caller asks `question`
    (8 kHz speech) and hangs up once the answer has played: the session id and the answer's PCM."""
    from tests.audio import speech
    from tests.fakes.twilio_client import TwilioMediaStreamsClient, ulaw_decode

    response = api.post(
        "/v1/sessions/twilio",
        json={"agentId": agent_id, "from": "+15550001111", "to": "+15550002222"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    async with TwilioMediaStreamsClient.from_twiml(response.json()["twiml"]) as client:
        await client.send_audio(speech(question, sample_rate=8000))
        await client.send_silence(1.5)
        await client.wait_marks(1, timeout=60)  # the answer has played
        reply = ulaw_decode(bytes(client.agent_audio))
        await client.stop()
        # Teardown waits on the providers (Pipecat bounds AssemblyAI's Termination at 5 s and
        # each websocket close at 2 s): on a loaded machine 5 s was not always enough.
        await client.wait_closed(timeout=15)
    return response.json()["session"]["session_id"], reply
