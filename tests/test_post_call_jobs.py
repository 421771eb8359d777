"""Post-call work is durable: a webhook delivery or an analysis cut off by `kill -9` is
finished by the restarted node or by another node, and failed deliveries are retried with
backoff, then given up and recorded."""

import asyncio
import json
import signal
import time

from tests.fakes.scripted_llm import HOLD
from tests.helpers.post_call import ANALYSIS, analysis_requests, talk, verify, wait_for_analysis
from tests.helpers.servers import make_agent, start_server
from tests.helpers.storage import TEST_BACKEND, production_storage_env

SECRET = "whsec_durable_jobs_0123456789"
FAST_JOBS = {"SWITCHBOARD_JOB_LEASE_SECS": "3", "SWITCHBOARD_JOB_POLL_SECS": "0.5"}


def node_env(llm, storage: dict, host: str, **extra: str) -> dict:
    return {
        "SCRIPTED_LLM_URL": llm.url,
        "SWITCHBOARD_NODE_ID": host,
        **FAST_JOBS,
        **storage,
        **extra,
    }


def kill_9(server) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)


async def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return result


async def end_a_call_and_hold_its_webhook(server, webhook_receiver, path: str) -> tuple[dict, dict]:
    """A call ends on `server`; its `session.ended` delivery is in flight, held open by the
    webhook_receiver. Returns the agent and the held request."""
    webhook_receiver.hold_next(path)
    with server.client() as api:
        agent = make_agent(
            api,
            pipeline="scripted",
            webhook_url=webhook_receiver.url(path),
            webhook_secret=SECRET,
            webhook_events=["session.ended"],
        )
    await talk(server, agent)
    held = await wait_until(
        lambda: webhook_receiver.events(path, status=None), 30, "the held delivery"
    )
    return agent, held[0]


async def assert_delivered_as_if_nothing_happened(
    server, webhook_receiver, path: str, agent: dict, held: dict
) -> None:
    delivered = await wait_until(
        lambda: webhook_receiver.events(path), 30, "the delivery after the kill"
    )
    assert len(delivered) == 1 and len(webhook_receiver.events(path, status=None)) == 1
    request = delivered[0]
    assert verify(SECRET, request)
    assert request["body"] == held["body"]  # the same event: same id, same payload
    event = json.loads(request["body"])
    assert (
        event["id"]
        == json.loads(held["body"])["id"]
        == request["headers"]["X-Switchboard-Delivery"]
    )
    assert event["event"] == "session.ended" and event["data"]["end_reason"] == "caller_hangup"
    with server.client() as api:
        deliveries = api.get(f"/v1/agents/{agent['id']}/webhook-deliveries").json()
    assert deliveries["total"] == 1
    assert (deliveries["items"][0]["id"], deliveries["items"][0]["status"]) == (
        event["id"],
        "delivered",
    )


async def test_delivery_cut_off_by_kill_9_is_sent_after_restart(
    tmp_path, scripted_llm, webhook_receiver
):
    scripted_llm.reset()
    storage = production_storage_env() if TEST_BACKEND == "postgres" else {}
    env = node_env(scripted_llm, storage, "node-a")
    server = start_server(tmp_path / "a", preload=["scripted"], env=env)
    try:
        agent, held = await end_a_call_and_hold_its_webhook(server, webhook_receiver, "/restart")
        kill_9(server)
    finally:
        server.stop()
    server = start_server(tmp_path / "a", preload=["scripted"], env=env)
    try:
        await assert_delivered_as_if_nothing_happened(
            server, webhook_receiver, "/restart", agent, held
        )
    finally:
        server.stop()


async def test_delivery_cut_off_by_kill_9_is_sent_by_the_other_node(
    tmp_path, scripted_llm, webhook_receiver
):
    scripted_llm.reset()
    storage = production_storage_env()
    first = start_server(
        tmp_path / "a", preload=["scripted"], env=node_env(scripted_llm, storage, "node-a")
    )
    try:
        agent, held = await end_a_call_and_hold_its_webhook(first, webhook_receiver, "/takeover")
        second = start_server(
            tmp_path / "b", preload=["scripted"], env=node_env(scripted_llm, storage, "node-b")
        )
        try:
            kill_9(first)
            await assert_delivered_as_if_nothing_happened(
                second, webhook_receiver, "/takeover", agent, held
            )
        finally:
            second.stop()
    finally:
        first.stop()


async def test_delivery_cut_off_by_a_clean_stop_is_handed_back_at_once(
    tmp_path, scripted_llm, webhook_receiver
):
    scripted_llm.reset()
    storage = production_storage_env() if TEST_BACKEND == "postgres" else {}
    env = node_env(scripted_llm, storage, "node-a", SWITCHBOARD_JOB_LEASE_SECS="600")
    server = start_server(tmp_path / "a", preload=["scripted"], env=env)
    try:
        agent, held = await end_a_call_and_hold_its_webhook(server, webhook_receiver, "/stopped")
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    server = start_server(tmp_path / "a", env=env)
    try:  # delivered long before the 600 s lease would have run out
        await assert_delivered_as_if_nothing_happened(
            server, webhook_receiver, "/stopped", agent, held
        )
    finally:
        server.stop()


async def test_failing_delivery_is_retried_with_backoff_then_given_up(
    tmp_path, scripted_llm, webhook_receiver
):
    scripted_llm.reset()
    webhook_receiver.fail_next("/failing", 500, 500, 500, 500)
    server = start_server(
        tmp_path / "a",
        preload=["scripted"],
        env={
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "SWITCHBOARD_WEBHOOK_MAX_ATTEMPTS": "3",
            "SWITCHBOARD_WEBHOOK_BACKOFF_SECS": "1",
        },
    )
    try:
        with server.client() as api:
            agent = make_agent(
                api,
                pipeline="scripted",
                webhook_url=webhook_receiver.url("/failing"),
                webhook_secret=SECRET,
                webhook_events=["session.ended"],
            )
            await talk(server, agent)
            attempts = await wait_until(
                lambda: (
                    webhook_receiver.events("/failing", status=500)[2:]
                    and webhook_receiver.events("/failing", status=500)
                ),
                30,
                "three attempts",
            )
            await asyncio.sleep(5)  # a fourth would have come by now (backoff 4 s)
            assert len(webhook_receiver.events("/failing", status=500)) == 3
            first, second, third = (a["time"] for a in attempts)
            assert 1 <= second - first < 2.5 and 2 <= third - second < 3.5  # 1 s, then doubled
            assert len({json.loads(a["body"])["id"] for a in attempts}) == 1
            assert all(verify(SECRET, a) for a in attempts)
            [delivery] = api.get(f"/v1/agents/{agent['id']}/webhook-deliveries").json()["items"]
            assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
                "failed",
                3,
                500,
            )
            assert (
                delivery["last_error"].startswith("HTTP 500") and delivery["delivered_at"] is None
            )
    finally:
        server.stop()


async def test_analysis_cut_off_by_kill_9_is_completed_after_restart(tmp_path, scripted_llm):
    scripted_llm.reset()
    scripted_llm.script("The clinic opens at eight on Saturdays.")
    scripted_llm.script_oneshot(
        HOLD, json.dumps({**ANALYSIS, "custom": {}}), when="open on Saturdays"
    )
    storage = production_storage_env() if TEST_BACKEND == "postgres" else {}
    env = node_env(scripted_llm, storage, "node-a")
    server = start_server(tmp_path / "a", preload=["scripted"], env=env)
    try:
        with server.client() as api:
            agent = make_agent(api, pipeline="scripted")
        session_id = await talk(server, agent, "When do you open on Saturdays?")
        await wait_until(
            lambda: analysis_requests(scripted_llm, "open on Saturdays"), 30, "the analysis request"
        )
        kill_9(server)
    finally:
        server.stop()
    scripted_llm.release()
    server = start_server(tmp_path / "a", preload=["scripted"], env=env)
    try:
        with server.client() as api:
            analysis = wait_for_analysis(api, session_id)
        assert (
            analysis["status"] == "completed"
            and analysis["result"]["summary"] == ANALYSIS["summary"]
        )
        assert len(analysis_requests(scripted_llm, "open on Saturdays")) == 2
    finally:
        server.stop()
