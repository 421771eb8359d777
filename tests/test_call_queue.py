"""Waiting instead of busy: inbound Twilio calls that find their account at its call cap wait in
line (`overflow: queue`) and are connected in arrival order, or hear the apology.

The test plays Twilio's side of each call: it follows the server's TwiML (`<Enqueue>` puts the
call in the fake REST API's queue, whose `waitUrl` and `action` it requests as Twilio does), and
when the server moves a call out of the queue through the REST API it requests the member's new
`Url` and joins the Media Stream with the Twilio Media Streams client.
"""

import asyncio
import io
import uuid
import wave
from urllib.parse import urlsplit
from xml.etree import ElementTree

import httpx

from tests.fakes.twilio_client import TwilioMediaStreamsClient, parse_twiml
from tests.helpers.calls import wait_for_status
from tests.helpers.servers import scripted_agent
from tests.helpers.twilio import ACCOUNT_SID, CALLER, signed_post

APOLOGY = "all our lines are busy"


def capped_account(server, name: str) -> httpx.Client:
    """A client of a new account that may have one call at a time."""
    with server.client() as admin:
        account = admin.post("/v1/accounts", json={"name": name, "max_concurrent_calls": 1})
        assert account.status_code == 201, account.text
        key = admin.post(
            "/v1/api-keys", json={"account_id": account.json()["id"], "name": f"{name} key"}
        ).json()
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key["secret"]}, timeout=30)


def path(url: str) -> str:
    return urlsplit(url).path


class TwilioCall:
    """Twilio's side of one inbound call to `agent`."""

    def __init__(self, server, rest, agent: dict):
        self.server, self.rest, self.agent = server, rest, agent
        self.call_sid = "CA" + uuid.uuid4().hex
        self.queue_sid: str | None = None
        self.wait_url = self.action_url = ""

    def post(self, path_: str, **form: str) -> httpx.Response:
        base = {"CallSid": self.call_sid, "AccountSid": ACCOUNT_SID, "From": CALLER}
        response = signed_post(self.server, path_, {**base, "To": "+15550002222", **form})
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/xml"
        ), response.text
        return response

    def ring(self) -> str:
        """The voice webhook's TwiML; a call told to `<Enqueue>` joins the fake's queue and hears
        its first hold answer."""
        twiml = self.post(f"/v1/twilio/voice?agentId={self.agent['id']}", CallStatus="ringing").text
        enqueue = ElementTree.fromstring(twiml).find("Enqueue")
        if enqueue is not None:
            self.wait_url, self.action_url = enqueue.get("waitUrl"), enqueue.get("action")
            assert enqueue.get("waitUrlMethod") == "POST" and self.wait_url and self.action_url
            self.queue_sid, _position = self.rest.enqueue(enqueue.text, self.call_sid)
        return twiml

    def wait(self, queue_time: int = 0) -> str:
        """The `waitUrl`'s answer (Twilio asks again each time it has played)."""
        return self.post(
            path(self.wait_url), QueueSid=self.queue_sid, QueueTime=str(queue_time)
        ).text

    def left(self, result: str) -> str:
        """The `<Enqueue>`'s action, told why the call left the queue."""
        return self.post(path(self.action_url), QueueSid=self.queue_sid, QueueResult=result).text

    async def moved(self, timeout: float = 30) -> str:
        """Once the server moves the call out of the queue: the action hears `redirected`,
        and the member's new `Url` answers the TwiML the call runs next."""
        request = await asyncio.to_thread(self.rest.wait_for_dequeue, self.call_sid, timeout)
        assert request.value("Method") == "POST"
        assert "<Say>" not in self.left("redirected")
        return self.post(path(request.value("Url"))).text


async def talk_and_hang_up(call: TwilioCall, twiml: str) -> None:
    """Join the call's Media Stream, hear the agent's greeting, hang up."""
    async with TwilioMediaStreamsClient.from_twiml(twiml, call_sid=call.call_sid) as client:
        await client.wait_marks(1, timeout=60)
        await client.stop()
        await client.wait_closed(timeout=10)


def dequeued(rest) -> list[str]:
    """The CallSids the server asked to move out of a queue, in order."""
    return [r.path.rsplit("/", 1)[1].removesuffix(".json") for r in rest.dequeues()]


async def test_callers_at_the_cap_wait_and_are_connected_in_arrival_order(
    twilio_server, twilio_rest, llm
):
    api = capped_account(twilio_server, "queue order")
    agent = scripted_agent(
        api,
        greeting="Thanks for holding, this is the clinic.",
        overflow="queue",
        max_wait_secs=60,
        wait_message="Please hold for the clinic.",
    )
    first, a, b = (TwilioCall(twilio_server, twilio_rest, agent) for _ in range(3))
    async with TwilioMediaStreamsClient.from_twiml(first.ring(), call_sid=first.call_sid) as call:
        await call.wait_marks(1, timeout=60)
        # Two callers arrive while the one place is taken: both wait, in Twilio's queue.
        for caller in (a, b):
            assert "<Stream" not in caller.ring() and caller.queue_sid
            hold = ElementTree.fromstring(caller.wait())
            assert hold.findtext("Say") == "Please hold for the clinic."
            assert path(hold.findtext("Play") or "") == "/v1/twilio/queue/hold.wav"
            assert ElementTree.fromstring(caller.wait(queue_time=4)).find("Say") is None
        assert a.queue_sid == b.queue_sid  # the account's queue
        audio = httpx.get(f"{twilio_server.url}/v1/twilio/queue/hold.wav", timeout=10)
        with wave.open(io.BytesIO(audio.content)) as wav:
            assert (wav.getframerate(), wav.getnframes()) == (8000, 4 * 8000)
        # Nobody jumps the line: a new session of the account is refused while they wait.
        refused = api.post(f"/v1/agents/{agent['id']}/sessions")
        assert refused.status_code == 429 and refused.json()["details"]["waiting"] == 2
        await asyncio.sleep(1.5)  # the line's pump has looked: no place is free
        assert dequeued(twilio_rest) == []
        await call.stop()
        await call.wait_closed(timeout=10)
    # The place frees: the first caller in line is moved to it, then (once it ends) the next.
    a_twiml = await a.moved()
    assert parse_twiml(a_twiml)[0].endswith("/v1/sessions/twilio/stream")
    assert dequeued(twilio_rest) == [a.call_sid] and twilio_rest.members(b.queue_sid) == [
        b.call_sid
    ]
    await talk_and_hang_up(a, a_twiml)
    b_twiml = await b.moved()
    await talk_and_hang_up(b, b_twiml)
    assert dequeued(twilio_rest) == [a.call_sid, b.call_sid]
    sessions = api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"]
    assert len(sessions) == 3
    for session in sessions:
        wait_for_status(api, session["session_id"], "completed")
    waited = sorted(s["metadata"].get("waited_secs", -1) for s in sessions)
    assert waited[0] == -1 and 0 < waited[1] < waited[2]
