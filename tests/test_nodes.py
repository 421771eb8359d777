"""Several nodes of one cluster: two `switchboard serve` processes (different node ids) on one
PostgreSQL database and one Redis; the account call cap under parallel bursts; lost nodes.

The cluster legs are skipped, with the reason printed, only when PostgreSQL or Redis don't answer.
"""

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from app.client import SessionClient
from benchmarks.common import worker_pids
from tests.fakes.twilio_client import TwilioMediaStreamsClient, parse_twiml
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.helpers.calls import agent_ws, refused, wait_for_status
from tests.helpers.servers import make_agent, start_server
from tests.helpers.storage import cluster_storage_env
from tests.helpers.twilio import ACCOUNT_SID, CALLER, signed_post, twilio_env

CAP = 2
SHORT_LEASE = {"SWITCHBOARD_NODE_HEARTBEAT_SECS": "0.5", "SWITCHBOARD_NODE_LEASE_SECS": "3"}


def cluster_env(scripted_llm) -> dict[str, str]:
    return {**cluster_storage_env(), "SCRIPTED_LLM_URL": scripted_llm.url}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, scripted_llm, twilio_rest):
    """Nodes A and B of one cluster, Twilio's signing key and REST API (a fake) set on both."""
    env = {**cluster_env(scripted_llm), **twilio_env(scripted_llm, twilio_rest)}
    a = start_server(tmp_path_factory.mktemp("node_a"), preload=["scripted"], env=env)
    b = start_server(tmp_path_factory.mktemp("node_b"), preload=["scripted"], env=env)
    yield a, b
    a.stop()
    b.stop()


def capped_account(server, cap: int = CAP) -> tuple[httpx.Client, str]:
    """An API client of a new account capped at `cap` live calls, and its key."""
    admin = server.client()
    account = admin.post(
        "/v1/accounts", json={"name": "capped", "max_concurrent_calls": cap}
    ).json()
    key = admin.post("/v1/api-keys", json={"account_id": account["id"], "name": "k"}).json()[
        "secret"
    ]
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30), key


def node_id(server) -> str:
    return httpx.get(f"{server.url}/health", timeout=10).json()["node_id"]


def live_calls(server) -> int:
    return httpx.get(f"{server.url}/health", timeout=10).json()["live_calls"]


def on(server, url: str) -> str:
    """The same WebSocket URL, on another node."""
    return re.sub(r"^ws://[^/]+", server.ws_url(""), url)


async def join(url: str) -> SessionClient:
    """Connect and wait until the call is live (`session.ready`) or refused (closed)."""
    client = SessionClient(url)
    await client.__aenter__()
    deadline = time.monotonic() + 60
    while not client.of_type("session.ready") and not client.closed:
        assert time.monotonic() < deadline, f"neither ready nor refused: {client.events}"
        await asyncio.sleep(0.05)
    return client


async def burst(urls: list[str]) -> tuple[list[SessionClient], list[SessionClient]]:
    """Join all at once; the calls that went live and the refused ones (live calls are ended)."""
    clients = await asyncio.gather(*(join(url) for url in urls))
    live = [c for c in clients if c.of_type("session.ready")]
    refused_ = [c for c in clients if not c.of_type("session.ready")]
    for client in live:
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=30)
    for client in clients:
        await client.close()
    return live, refused_


async def wait_until_no_live_calls(*servers) -> None:
    deadline = time.monotonic() + 15
    while any(live_calls(s) for s in servers):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def wait_until_no_active_sessions(api: httpx.Client) -> None:
    """Ended calls are stored just after their sockets close."""
    deadline = time.monotonic() + 15
    while api.get("/v1/sessions", params={"status": "active"}).json()["total"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


def assert_cap_refusals(refused_: list[SessionClient]) -> None:
    assert {c.close_code for c in refused_} == {4429}
    assert {c.of_type("session.error")[0]["code"] for c in refused_} == {"concurrent_call_limit"}


@pytest.mark.cluster
async def test_a_session_created_on_a_is_joined_on_b_and_deleting_its_agent_on_a_ends_it(cluster):
    a, b = cluster
    assert node_id(a) != node_id(b)
    api = a.client()
    agent = make_agent(api, pipeline="scripted")
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    async with SessionClient(on(b, session["websocket_url"])) as client:
        await client.wait_for("session.ready", timeout=60)
        assert (live_calls(a), live_calls(b)) == (0, 1)
        assert api.delete(f"/v1/agents/{agent['id']}").status_code == 200
        deleted = time.monotonic()
        ended = await client.wait_for("session.ended", timeout=5)
        assert ended["reason"] == "agent_deleted" and time.monotonic() - deleted < 5
    assert wait_for_status(api, session["session_id"], "completed")["end_reason"] == "agent_deleted"


@pytest.mark.cluster
async def test_the_call_cap_holds_across_nodes_and_under_a_parallel_burst(cluster):
    a, b = cluster
    api, key = capped_account(a)
    agent = make_agent(api, pipeline="scripted")
    # Sessions waiting for a client hold no place under the cap; they are joined in the burst below.
    created = [
        api.post(f"/v1/agents/{agent['id']}/sessions").json()["websocket_url"] for _ in range(5)
    ]
    async with (
        SessionClient(agent_ws(a, agent["id"], key=key)) as on_a,
        SessionClient(agent_ws(b, agent["id"], key=key)) as on_b,
    ):
        await on_a.wait_for("session.ready", timeout=60)
        await on_b.wait_for("session.ready", timeout=60)
        for server in (a, b):
            third = await refused(agent_ws(server, agent["id"], key=key))
            assert third.close_code == 4429
            response = httpx.post(
                f"{server.url}/v1/agents/{agent['id']}/sessions", headers={"X-API-Key": key}
            )
            assert (
                response.status_code == 429 and response.json()["code"] == "concurrent_call_limit"
            )
            assert response.headers["Retry-After"]
        for client in (on_a, on_b):
            await client.send_event({"type": "session.end"})
            await client.wait_for("session.ended", timeout=30)
    await wait_until_no_active_sessions(api)

    # Ten joins at once over both nodes: new calls, and the sessions created beforehand.
    urls = []
    for index in range(5):
        urls.append(agent_ws((a, b)[index % 2], agent["id"], key=key))
        urls.append(on((b, a)[index % 2], created[index]))
    live, refused_ = await burst(urls)
    assert len(live) == CAP and len(refused_) == 10 - CAP
    assert_cap_refusals(refused_)


@pytest.mark.cluster
async def test_ringing_phone_calls_hold_their_place_under_the_cap(cluster):
    a, b = cluster
    api, key = capped_account(a)
    agent = make_agent(api, pipeline="scripted", greeting="Hello.")

    def phone_session(server) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/sessions/twilio",
            headers={"X-API-Key": key},
            timeout=30,
            json={"agentId": agent["id"], "from": "+15550001111", "to": "+15550002222"},
        )

    ringing = [phone_session(a), phone_session(b)]
    assert [r.status_code for r in ringing] == [200, 200]
    # Nobody has answered yet, but both calls hold their place: a third is refused on either node.
    assert phone_session(b).status_code == 429
    assert (await refused(agent_ws(a, agent["id"], key=key))).close_code == 4429
    # Answering one (its stream reaching the other node) takes the place it holds, not another.
    _url, parameters = parse_twiml(ringing[0].text)
    async with TwilioMediaStreamsClient(
        b.ws_url("/v1/sessions/twilio/stream"), parameters
    ) as answered:
        await answered.wait_marks(1, timeout=30)
        assert live_calls(b) == 1
        assert (await refused(agent_ws(b, agent["id"], key=key))).close_code == 4429
        await answered.stop()
        await answered.wait_closed(timeout=10)


@pytest.mark.cluster
async def test_a_relay_token_used_on_a_is_refused_on_b(cluster):
    a, b = cluster
    api = a.client()
    agent = make_agent(api, pipeline="scripted", greeting="Hello.")
    twiml = api.post(
        "/v1/sessions/twilio",
        json={"agentId": agent["id"], "from": "+15550001111", "to": "+15550002222"},
    ).text
    stream_url, parameters = parse_twiml(twiml)
    assert stream_url == a.ws_url("/v1/sessions/twilio/stream")
    async with TwilioMediaStreamsClient(stream_url, parameters) as first:
        await first.wait_marks(1, timeout=30)  # the call is live on A
        replay = TwilioMediaStreamsClient(b.ws_url("/v1/sessions/twilio/stream"), parameters)
        async with replay:
            await replay.wait_closed(timeout=15)
        assert (replay.close_code, replay.close_reason) == (
            4401,
            "relay token refused: it was already used",
        )
        assert replay.media_messages == 0
        await first.stop()
        await first.wait_closed(timeout=10)


@pytest.mark.cluster
async def test_twilio_s_end_of_call_on_another_node_leaves_the_call_to_the_node_running_it(
    cluster,
):
    """Twilio's status callbacks may reach any node. The call was admitted on B (its
    `in-progress` callback) and its stream runs on A: a `completed` reaching B while A's stream
    still runs leaves the session to A, which ends it when the stream stops."""
    a, b = cluster
    api = a.client()
    number = "+15550007812"
    agent = make_agent(api, pipeline="scripted", greeting="Hello.", phone_numbers=[number])
    form = {"CallSid": "CA" + "8" * 32, "AccountSid": ACCOUNT_SID, "From": CALLER, "To": number}
    answer = signed_post(a, "/v1/twilio/voice", {**form, "CallStatus": "ringing"})
    assert answer.status_code == 200, answer.text
    [session] = api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"]

    def status(server, value: str) -> None:
        response = signed_post(server, "/v1/twilio/status", {**form, "CallStatus": value})
        assert response.status_code == 204, response.text

    status(b, "in-progress")
    async with TwilioMediaStreamsClient.from_twiml(answer.text, call_sid=form["CallSid"]) as call:
        await call.wait_marks(1, timeout=30)  # the greeting played: the call runs on A
        assert live_calls(a) == 1
        status(b, "completed")
        assert api.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "active"
        await call.stop()
        await call.wait_closed(timeout=15)
    assert wait_for_status(api, session["session_id"], "completed")["end_reason"] == "caller_hangup"


def two_worker_server(path, scripted_llm):
    """`switchboard serve --workers 2` on the default storage leg, the scripted pipeline preloaded."""
    return start_server(
        path, workers=2, preload=["scripted"], env={"SCRIPTED_LLM_URL": scripted_llm.url}
    )


async def test_the_call_cap_holds_under_a_parallel_burst_on_one_node_with_two_workers(
    tmp_path, scripted_llm
):
    server = two_worker_server(tmp_path / "burst", scripted_llm)
    try:
        api, key = capped_account(server)
        agent = make_agent(api, pipeline="scripted")
        created = [
            api.post(f"/v1/agents/{agent['id']}/sessions").json()["websocket_url"] for _ in range(4)
        ]
        live, refused_ = await burst(
            [agent_ws(server, agent["id"], key=key) for _ in range(4)] + created
        )
        assert len(live) == CAP and len(refused_) == 8 - CAP
        assert_cap_refusals(refused_)
    finally:
        server.stop()


async def test_a_burst_of_calls_is_spread_evenly_over_two_workers(tmp_path, scripted_llm):
    """The supervisor hands each new connection to the worker holding the fewest: ten calls
    dialled at once run five on each worker, so all fit under the default cap of five a worker
    (a hash of the caller's port would split them unevenly three times in four)."""
    server = two_worker_server(tmp_path / "spread", scripted_llm)
    try:
        with server.client() as api:
            agent = make_agent(api, pipeline="scripted")
        await asyncio.sleep(1)  # the worker has seen that connection close: it holds nothing
        calls = [SessionClient(agent_ws(server, agent["id"])) for _ in range(10)]
        await asyncio.gather(*(call.__aenter__() for call in calls))
        try:
            await asyncio.gather(*(call.wait_for("session.ready", timeout=60) for call in calls))
            # Two kept-open connections: the first goes to one worker, the second, as that
            # worker now holds one more, to the other.
            with httpx.Client(base_url=server.url) as one, httpx.Client(base_url=server.url) as two:
                healths = [one.get("/health").json(), two.get("/health").json()]
            assert len({h["node_id"] for h in healths}) == 2, healths
            assert [h["live_calls"] for h in healths] == [5, 5], healths
        finally:
            await asyncio.gather(*(call.__aexit__(None, None, None) for call in calls))
    finally:
        server.stop()


def dead(pid: int) -> bool:
    """Gone, or a zombie its parent has yet to reap whose every thread has exited (the main
    thread turns zombie while the others may still be exiting, holding its descriptors)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status and "\nThreads:\t1\n" in status


def test_a_killed_worker_s_connections_go_to_the_other_until_it_is_back(tmp_path, scripted_llm):
    """The supervisor stops handing connections to a worker that died (its end of the pair is
    closed), restarts it, and hands them out to both again once it serves (not while it starts)."""
    server = two_worker_server(tmp_path / "killed", scripted_llm)
    try:
        ids: set[str] = set()
        deadline = time.monotonic() + 60
        while len(ids) < 2:  # each answers for itself once it serves
            assert time.monotonic() < deadline, f"only {ids} answered"
            ids.add(httpx.get(f"{server.url}/health", timeout=10).json()["node_id"])
        killed = worker_pids(server.process.pid)[0]
        os.kill(killed, signal.SIGKILL)
        while not dead(killed):  # a connection handed over as it died is lost with it
            time.sleep(0.05)
        answers = [httpx.get(f"{server.url}/health", timeout=10) for _ in range(10)]
        assert [a.status_code for a in answers] == [200] * 10
        # all from the live worker: none waits in a restarted one that is still starting
        survivors = {a.json()["node_id"] for a in answers}
        assert len(survivors) == 1 and survivors <= ids, (survivors, ids)
        deadline = time.monotonic() + 60
        new_ids: set[str] = set()
        while len(new_ids - ids) < 1:
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            new_ids.add(httpx.get(f"{server.url}/health", timeout=10).json()["node_id"])
        assert len(worker_pids(server.process.pid)) == 2
    finally:
        server.stop()


@pytest.mark.cluster
async def test_a_killed_node_s_calls_end_node_lost_while_the_other_node_s_call_goes_on(
    tmp_path, scripted_llm
):
    scripted_llm.reset()
    env = {**cluster_env(scripted_llm), **SHORT_LEASE}
    a = start_server(tmp_path / "node_a", preload=["scripted"], env=env)
    b = start_server(tmp_path / "node_b", preload=["scripted"], env=env)
    receiver = WebhookReceiver().start()
    try:
        api = a.client()
        agent = make_agent(api, pipeline="scripted", webhook_url=receiver.url("/events"))
        async with (
            SessionClient(agent_ws(a, agent["id"])) as on_a,
            SessionClient(agent_ws(b, agent["id"])) as on_b,
        ):
            ready_a = await on_a.wait_for("session.ready", timeout=60)
            ready_b = await on_b.wait_for("session.ready", timeout=60)
            await on_b.send_event({"type": "input.text", "text": "Remember my order, please."})
            await on_b.wait_for("transcript.agent", timeout=60)

            b.stop(signal.SIGKILL)
            killed = time.monotonic()
            lost = wait_for_status(api, ready_b["session_id"], "failed", timeout=60)
            assert lost["end_reason"] == "node_lost" and time.monotonic() - killed < 60
            transcript = api.get(f"/v1/sessions/{ready_b['session_id']}/transcript").json()["items"]
            assert [(t["speaker"], t["content"]) for t in transcript] == [
                ("USER", "Remember my order, please."),
                ("AGENT", scripted_llm.default_reply),
            ]
            # The surviving node tells the agent's webhook how the lost call ended.
            deadline = time.monotonic() + 15
            while not (
                ended := [
                    e
                    for e in (json.loads(r["body"]) for r in receiver.events("/events"))
                    if e["event"] == "session.ended" and e["session_id"] == ready_b["session_id"]
                ]
            ):
                assert time.monotonic() < deadline, "no session.ended webhook for the lost call"
                await asyncio.sleep(0.2)
            assert (
                ended[0]["data"]["status"] == "failed"
                and ended[0]["data"]["end_reason"] == "node_lost"
            )

            # A's own call was never touched and carries on.
            assert api.get(f"/v1/sessions/{ready_a['session_id']}").json()["status"] == "active"
            await on_a.send_event({"type": "input.text", "text": "Are you still there?"})
            await on_a.wait_for("transcript.agent", timeout=60)
            await on_a.send_event({"type": "session.end"})
            await on_a.wait_for("session.ended", timeout=10)
        done = wait_for_status(api, ready_a["session_id"], "completed")
        assert done["end_reason"] == "caller_hangup"
    finally:
        a.stop()
        b.stop()
        receiver.stop()


async def test_health_and_metrics_of_a_node_with_two_workers(tmp_path, scripted_llm):
    server = two_worker_server(tmp_path / "workers", scripted_llm)
    try:
        # A new connection per request: the supervisor hands each to a worker (the second
        # worker may start serving later than the first).
        seen: list[dict] = []
        deadline = time.monotonic() + 60
        while len({h["node_id"] for h in seen}) < 2 and time.monotonic() < deadline:
            seen.append(httpx.get(f"{server.url}/health", timeout=10).json())
        for health in seen:
            assert (
                health["status"] == "ok" and health["live_calls"] == 0 and 0 <= health["load"] <= 1
            )
        assert len({h["node_id"] for h in seen}) == 2, "both workers answer, each a node of its own"

        api = server.client()
        agent = make_agent(api, pipeline="scripted")
        for _ in range(4):
            async with SessionClient(agent_ws(server, agent["id"])) as client:
                await client.wait_for("session.ready", timeout=60)
                await client.send_event({"type": "session.end"})
                await client.wait_for("session.ended", timeout=10)
        await wait_until_no_live_calls(server)
        # Whichever worker answers the scrape counts every worker's calls.
        for _ in range(10):
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            ended = re.search(
                r'^switchboard_sessions_ended_total\{end_reason="caller_hangup"\} (\S+)$',
                text,
                re.M,
            )
            assert ended and float(ended.group(1)) == 4, text
            assert re.search(r"^switchboard_active_sessions 0\.0$", text, re.M), text
    finally:
        server.stop()
