"""Waiting instead of busy: inbound Twilio calls that find their account at its call cap wait in
line (`overflow: queue`) and are connected in arrival order, or hear the apology.

The test plays Twilio's side of each call: it follows the server's TwiML (`<Enqueue>` puts the
call in the fake REST API's queue, whose `waitUrl` and `action` it requests as Twilio does), and
when the server moves a call out of the queue through the REST API it requests the member's new
`Url` and joins the Media Stream with the Twilio Media Streams client.
"""

import asyncio
import io
import time
import uuid
import wave
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit
from xml.etree import ElementTree

import httpx
import pytest

from tests.fakes.twilio_client import TwilioMediaStreamsClient, parse_twiml
from tests.helpers.calls import wait_for_status
from tests.helpers.servers import scripted_agent, start_server
from tests.helpers.storage import cluster_storage_env
from tests.helpers.twilio import ACCOUNT_SID, CALLER, signed_post, twilio_env

APOLOGY = "please call again"


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

    def completed(self) -> None:
        """The call-status callback of a call that has ended."""
        form = {"CallSid": self.call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": "completed"}
        assert signed_post(self.server, "/v1/twilio/status", form).status_code == 204

    def ring(self) -> str:
        """The voice webhook's TwiML; a call told to `<Enqueue>` joins the fake's queue."""
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
        assert len(client.agent_audio) > 8000  # over a second of greeting
        await client.stop()
        await client.wait_closed(timeout=10)


def dequeued(rest, calls: list[TwilioCall]) -> list[str]:
    """The CallSids of `calls` the server asked to move out of a queue, in order."""
    sids = {call.call_sid for call in calls}
    moved = [r.path.rsplit("/", 1)[1].removesuffix(".json") for r in rest.dequeues()]
    return [sid for sid in moved if sid in sids]


async def test_callers_at_the_cap_wait_and_are_connected_in_arrival_order(
    twilio_server, twilio_rest
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
        assert dequeued(twilio_rest, [a, b]) == []
        await call.stop()
        await call.wait_closed(timeout=10)
    # The place frees: the first caller in line is moved to it, then (once it ends) the next.
    a_twiml = await a.moved()
    assert parse_twiml(a_twiml)[0].endswith("/v1/sessions/twilio/stream")
    assert dequeued(twilio_rest, [a, b]) == [a.call_sid] and twilio_rest.members(b.queue_sid) == [
        b.call_sid
    ]
    await talk_and_hang_up(a, a_twiml)
    b_twiml = await b.moved()
    await talk_and_hang_up(b, b_twiml)
    assert dequeued(twilio_rest, [a, b]) == [a.call_sid, b.call_sid]
    sessions = api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"]
    assert len(sessions) == 3
    for session in sessions:
        wait_for_status(api, session["session_id"], "completed")
    waited = sorted(s["metadata"].get("waited_secs", -1) for s in sessions)
    assert waited[0] == -1 and 0 < waited[1] < waited[2]


def ringing_holder(twilio_server, twilio_rest, agent: dict) -> TwilioCall:
    """A call answered with its stream TwiML but not streaming yet: it holds the one place."""
    holder = TwilioCall(twilio_server, twilio_rest, agent)
    assert "<Stream" in holder.ring()
    return holder


def test_a_caller_whose_wait_ends_hears_the_apology(twilio_server, twilio_rest):
    api = capped_account(twilio_server, "queue timeout")
    agent = scripted_agent(api, overflow="queue", max_wait_secs=5)
    ringing_holder(twilio_server, twilio_rest, agent)
    caller = TwilioCall(twilio_server, twilio_rest, agent)
    caller.ring()
    hold = ElementTree.fromstring(caller.wait())
    assert "stay on the line" in (hold.findtext("Say") or "") and hold.find("Leave") is None
    time.sleep(5)
    # The next hold request after the deadline makes the call leave the queue; the action
    # that follows answers the apology, and the call is never moved to a place.
    assert ElementTree.fromstring(caller.wait(queue_time=5)).find("Leave") is not None
    twilio_rest.hang_up_member(caller.call_sid)  # <Leave/> takes it out of Twilio's queue
    apology = ElementTree.fromstring(caller.left("leave"))
    assert APOLOGY in (apology.findtext("Say") or "").lower() and apology.find("Hangup") is not None
    assert dequeued(twilio_rest, [caller]) == []
    # Its place in line is gone: a late hold request only repeats the <Leave/>.
    assert ElementTree.fromstring(caller.wait(queue_time=9)).find("Leave") is not None


async def test_a_caller_who_hangs_up_while_waiting_leaves_the_line(twilio_server, twilio_rest):
    api = capped_account(twilio_server, "queue hang-up")
    agent = scripted_agent(api, overflow="queue", max_wait_secs=60)
    holder = ringing_holder(twilio_server, twilio_rest, agent)
    callers = [TwilioCall(twilio_server, twilio_rest, agent) for _ in range(4)]
    gone, ended, vanished, stays = callers
    for caller in callers:
        caller.ring()
        caller.wait()
    # The first hangs up and the `<Enqueue>`'s action says so, the second's status callback
    # does; the third's hang-up is never reported.
    for caller in (gone, ended, vanished):
        twilio_rest.hang_up_member(caller.call_sid)
    assert ElementTree.fromstring(gone.left("hangup")).find("Say") is None
    ended.completed()
    # The place frees (the ringing call ends): the callers whose hang-up was reported are never
    # offered it; the one who vanished is found gone when the server tries to move it, and the
    # next one gets it.
    holder.completed()
    stays_twiml = await stays.moved()
    assert "<Stream" in stays_twiml
    assert dequeued(twilio_rest, callers) == [vanished.call_sid, stays.call_sid]
    sessions = api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"]
    assert len(sessions) == 2  # the holder's and the one connected: nobody else took a place


def test_a_burst_at_the_cap_gets_clean_twiml_and_never_passes_the_cap(twilio_server, twilio_rest):
    api = capped_account(twilio_server, "queue burst")
    agent = scripted_agent(api, overflow="queue", max_wait_secs=60)
    holder = ringing_holder(twilio_server, twilio_rest, agent)
    first = TwilioCall(twilio_server, twilio_rest, agent)
    first.ring()
    first.wait()
    burst = [TwilioCall(twilio_server, twilio_rest, agent) for _ in range(12)]

    def ring(call: TwilioCall) -> str:
        twiml = call.ring()
        call.wait()
        return twiml

    # The place frees as the burst arrives: it goes to the caller who came first, and every
    # caller of the burst gets clean TwiML (no 500s) that queues it behind.
    with ThreadPoolExecutor(len(burst) + 1) as pool:
        freed = pool.submit(holder.completed)
        answers = list(pool.map(ring, burst))
        freed.result()
    assert all("<Enqueue" in twiml and "<Stream" not in twiml for twiml in answers)
    assert "<Stream" in asyncio.run(first.moved())
    # Forged or early requests of every waiting call's connect URL can't pass the cap: each
    # is sent back to its place in line.

    def connect(call: TwilioCall) -> str:
        return call.post(path(call.wait_url).removesuffix("/wait") + "/connect").text

    with ThreadPoolExecutor(len(burst)) as pool:
        early = list(pool.map(connect, burst))
    assert all("<Enqueue" in twiml and "<Stream" not in twiml for twiml in early)
    time.sleep(1.5)  # the pump has looked again: the one place is taken
    assert dequeued(twilio_rest, [first, *burst]) == [first.call_sid]
    sessions = api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"]
    assert len(sessions) == 2


def test_overflow_settings_are_checked_together(twilio_server, twilio_rest):
    api = capped_account(twilio_server, "queue settings")
    both = {"overflow": "queue", "overflow_number": "+14155550199"}
    refused = api.post(
        "/v1/agents", json={"name": "a", "voice_id": "joe", "system_prompt": "x", **both}
    )
    assert refused.status_code == 422 and refused.json()["details"]["fields"] == [
        "overflow",
        "overflow_number",
    ]
    agent = scripted_agent(api, overflow_number="+14155550199")
    assert (agent["overflow"], agent["max_wait_secs"], agent["wait_message"]) == ("busy", 60, None)
    assert api.patch(f"/v1/agents/{agent['id']}", json={"overflow": "queue"}).status_code == 422
    changed = api.patch(
        f"/v1/agents/{agent['id']}",
        json={"overflow": "queue", "overflow_number": None, "max_wait_secs": 1800},
    )
    assert changed.status_code == 200 and changed.json()["overflow"] == "queue"
    spec = httpx.get(f"{twilio_server.url}/openapi.json", timeout=10).json()
    fields = spec["components"]["schemas"]["AgentCreate"]["properties"]
    assert fields["overflow"]["enum"] == ["busy", "queue"]
    assert (fields["max_wait_secs"]["minimum"], fields["max_wait_secs"]["maximum"]) == (5, 1800)
    assert {"/v1/twilio/queue/{wait_id}/wait", "/v1/twilio/queue/hold.wav"} <= set(spec["paths"])
    # A queue callback for a call that is not the line's is refused, not answered.
    holder = ringing_holder(twilio_server, twilio_rest, agent)
    caller = TwilioCall(twilio_server, twilio_rest, agent)
    assert "<Enqueue" in caller.ring()
    stranger = {"CallSid": "CA" + uuid.uuid4().hex, "QueueSid": caller.queue_sid or ""}
    assert signed_post(twilio_server, path(caller.wait_url), stranger).status_code == 404
    holder.completed()


@pytest.mark.cluster
async def test_the_line_and_the_handoff_hold_across_nodes(tmp_path, scripted_llm, twilio_rest):
    """Two nodes on one PostgreSQL + Redis: each caller's requests land on either node, and the
    place freed on one goes to the first caller in line, then the next."""
    env = {**cluster_storage_env(), **twilio_env(scripted_llm, twilio_rest)}
    a = start_server(tmp_path / "node_a", preload=[], env=env)  # migrates the shared storage
    b = start_server(tmp_path / "node_b", preload=[], env=env)
    try:
        api = capped_account(a, "queue nodes")
        agent = scripted_agent(api, overflow="queue", max_wait_secs=60)
        holder = ringing_holder(a, twilio_rest, agent)
        x, y = TwilioCall(b, twilio_rest, agent), TwilioCall(a, twilio_rest, agent)
        for call, other in ((x, a), (y, b)):
            assert "<Enqueue" in call.ring()
            call.server = other  # its hold requests reach the other node
            call.wait()
        holder.server = b
        holder.completed()
        assert "<Stream" in await x.moved()
        await asyncio.sleep(1.5)  # both nodes' workers have looked: the one place is taken
        assert dequeued(twilio_rest, [x, y]) == [x.call_sid]
        x.completed()  # its call ends (a status callback, on node A)
        assert "<Stream" in await y.moved()
        assert dequeued(twilio_rest, [x, y]) == [x.call_sid, y.call_sid]
    finally:
        a.stop()
        b.stop()
