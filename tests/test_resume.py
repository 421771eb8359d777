"""Resuming a direct WebSocket session: a client that drops may reconnect within the grace
period and carry on with its context; after it, the session ends `failed` / `disconnected`.

A server of its own, with a short grace period (`SWITCHBOARD_RESUME_GRACE_SECS`).
"""

import asyncio
import time

import pytest

from app.client import SessionClient
from tests.helpers.calls import refused, wait_for_status, wait_resumable
from tests.helpers.servers import make_agent, start_server

GRACE_SECS = 8


@pytest.fixture(scope="module")
def resume_server(tmp_path_factory, scripted_llm):
    server = start_server(
        tmp_path_factory.mktemp("resume"),
        preload=["scripted"],
        env={
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "SWITCHBOARD_RESUME_GRACE_SECS": str(GRACE_SECS),
        },
    )
    yield server
    server.stop()


@pytest.fixture
def rapi(resume_server):
    with resume_server.client() as client:
        yield client


async def test_reconnect_within_grace_resumes_with_context(resume_server, rapi, llm):
    agent = make_agent(rapi, pipeline="scripted", greeting="Hello, this is the clinic.")
    session = rapi.post(f"/v1/agents/{agent['id']}/sessions").json()
    url = session["websocket_url"]
    llm.script("Nice to meet you, Alice.", "Your name is Alice.")

    async with SessionClient(url) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        assert ready["resumed"] is False
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.send_event({"type": "input.text", "text": "Hi, my name is Alice."})
        await client.wait_for("transcript.agent", timeout=30, count=2)
    # The socket dropped without `session.end`: the session waits for the client.
    waiting = wait_resumable(rapi, session["session_id"])
    assert waiting["status"] == "active" and waiting["end_reason"] is None
    assert waiting["websocket_url"] == url

    async with SessionClient(url) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        assert ready["resumed"] is True
        await asyncio.sleep(2.0)
        assert not client.agent_audio  # no second greeting: the call carries on
        await client.send_event({"type": "input.text", "text": "What is my name?"})
        reply = await client.wait_for("transcript.agent", timeout=30)
        assert reply["text"] == "Your name is Alice."
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    # The LLM saw the whole conversation so far, restored from the stored transcript.
    last = [r for r in llm.requests if r.get("stream")][-1]["messages"]
    said = [(m["role"], m["content"]) for m in last if m["role"] in ("user", "assistant")]
    assert said == [
        ("assistant", "Hello, this is the clinic."),
        ("user", "Hi, my name is Alice."),
        ("assistant", "Nice to meet you, Alice."),
        ("user", "What is my name?"),
    ]
    done = wait_for_status(rapi, session["session_id"], "completed")
    assert done["end_reason"] == "caller_hangup" and done["resumable_until"] is None
    items = rapi.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    assert [t["content"] for t in items] == [c for _, c in said] + ["Your name is Alice."]


async def test_after_the_grace_period_the_session_fails(resume_server, rapi, llm):
    agent = make_agent(rapi, pipeline="scripted", greeting="Hello.")
    session = rapi.post(f"/v1/agents/{agent['id']}/sessions").json()
    async with SessionClient(session["websocket_url"]) as client:
        await client.wait_for("agent.speech.stopped", timeout=30)
    dropped = time.monotonic()
    wait_resumable(rapi, session["session_id"])
    failed = wait_for_status(rapi, session["session_id"], "failed", timeout=GRACE_SECS + 10)
    assert failed["end_reason"] == "disconnected"
    assert time.monotonic() - dropped >= GRACE_SECS - 0.5
    assert failed["websocket_url"] is None and failed["resumable_until"] is None
    late = await refused(session["websocket_url"])
    assert late.close_code == 4409 and late.of_type("session.error")[0]["code"] == "session_failed"


async def test_session_end_still_ends_at_once(resume_server, rapi, llm):
    agent = make_agent(rapi, pipeline="scripted")
    session = rapi.post(f"/v1/agents/{agent['id']}/sessions").json()
    async with SessionClient(session["websocket_url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "session.end"})
        ended = await client.wait_for("session.ended", timeout=10)
    assert ended["reason"] == "caller_hangup"
    done = wait_for_status(rapi, session["session_id"], "completed", timeout=5)
    assert done["resumable_until"] is None
