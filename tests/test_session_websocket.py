"""The direct WebSocket protocol: refusals, bad input, typed turns, client tools, max_turns.

These use the `scripted` pipeline (real Whisper/Piper/VAD, scripted LLM) so what the
agent says is certain.
"""

import asyncio
import json

import httpx

from app.client import SessionClient
from tests.audio import rms
from tests.fakes.scripted_llm import HOLD, ToolCall
from tests.helpers.calls import agent_ws, refused, wait_for_status
from tests.helpers.servers import make_agent, start_server


async def test_refusals_close_with_a_code_and_reason(server, api):
    agent = make_agent(api, pipeline="scripted")
    paused = make_agent(api, pipeline="scripted")
    api.patch(f"/v1/agents/{paused['id']}", json={"status": "paused"})
    cases = [
        (agent_ws(server, agent["id"], key="sk_wrong"), 4401, "unauthorized"),
        (server.ws_url(f"/v1/agents/{agent['id']}/session"), 4401, "unauthorized"),
        (agent_ws(server, "agt_missing"), 4404, "agent_not_found"),
        (agent_ws(server, paused["id"]), 4409, "agent_paused"),
        (agent_ws(server, agent["id"], sample_rate=44100), 4400, "invalid_sample_rate"),
        (agent_ws(server, agent["id"], sample_rate="abc"), 4400, "invalid_sample_rate"),
    ]
    for url, close_code, error_code in cases:
        client = await refused(url)
        assert client.of_type("session.error")[0]["code"] == error_code, url
        assert client.close_code == close_code, (url, client.close_code)
        assert client.close_reason


async def test_session_url_token_checks(server, api):
    agent = make_agent(api, pipeline="scripted")
    first = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    second = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    token = first["websocket_url"].split("token=")[1]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    cases = [
        (server.ws_url(f"/v1/sessions/{first['session_id']}/ws?token={forged}"), "invalid_token"),
        (server.ws_url(f"/v1/sessions/{second['session_id']}/ws?token={token}"), "invalid_token"),
        (server.ws_url(f"/v1/sessions/{first['session_id']}/ws?token=garbage"), "invalid_token"),
        (server.ws_url(f"/v1/sessions/{first['session_id']}/ws"), "unauthorized"),
    ]
    for url, code in cases:
        client = await refused(url)
        assert client.of_type("session.error")[0]["code"] == code
        assert client.close_code == 4401


async def test_a_session_can_be_joined_once(server, api, llm):
    agent = make_agent(api, pipeline="scripted")
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    async with SessionClient(session["websocket_url"]) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        assert ready["session_id"] == session["session_id"]
        assert api.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "active"
        second = await refused(session["websocket_url"])
        assert second.of_type("session.error")[0]["code"] == "session_active"
        assert second.close_code == 4409
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    ended = wait_for_status(api, session["session_id"], "completed")
    assert ended["end_reason"] == "caller_hangup"
    assert ended["started_at"] and ended["ended_at"] and ended["duration_secs"] >= 0
    # A finished session cannot be joined again.
    client = await refused(session["websocket_url"])
    assert client.close_code in (4401, 4409)


async def test_unjoined_session_expires(tmp_path):
    server = start_server(tmp_path / "expiring", env={"SWITCHBOARD_SESSION_CONNECT_TTL_SECS": "1"})
    try:
        with server.client() as api:
            agent = make_agent(api, pipeline="scripted")
            session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
            await asyncio.sleep(1.5)
            expired = api.get(f"/v1/sessions/{session['session_id']}").json()
            assert expired["status"] == "expired"
            assert expired["websocket_url"] is None
            client = await refused(session["websocket_url"])
            assert client.of_type("session.error")[0]["message"] == "token expired"
    finally:
        server.stop()


async def test_bad_input_gets_session_errors_and_the_call_goes_on(server, api, llm):
    llm.script("Still here and listening.")
    agent = make_agent(api, pipeline="scripted")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.send_raw("{not json")
        await client.send_raw(json.dumps({"type": "dance"}))
        await client.send_raw(json.dumps(["not", "an", "object"]))
        await client.send_raw(json.dumps({"type": "input.text"}))
        await client.send_raw(json.dumps({"type": "tool.result", "result": 1}))
        await client.send_raw(b"\x00\x01\x02")
        await client.wait_for("session.error", timeout=10, count=6)
        codes = [e["code"] for e in client.of_type("session.error")]
        assert codes == [
            "invalid_json",
            "unknown_event",
            "invalid_event",
            "invalid_event",
            "invalid_event",
            "invalid_audio",
        ]
        # The session still works after all that.
        await client.send_event({"type": "input.text", "text": "Are you there?"})
        reply = await client.wait_for("transcript.agent", timeout=30)
        assert reply["text"] == "Still here and listening."
    assert httpx.get(server.url + "/health").status_code == 200


async def test_typed_turn_is_answered_with_audio_and_stored(server, api, llm):
    llm.script("We open at nine tomorrow morning.")
    agent = make_agent(api, pipeline="scripted", system_prompt="You are the front desk.")
    async with SessionClient(
        agent_ws(server, agent["id"], sample_rate=24000), sample_rate=24000
    ) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        assert ready["sample_rate"] == 24000
        await client.send_event({"type": "input.text", "text": "When do you open?"})
        user = await client.wait_for("transcript.user", timeout=30)
        assert user["text"] == "When do you open?"
        reply = await client.wait_for("transcript.agent", timeout=30)
        assert reply == {**reply, "text": "We open at nine tomorrow morning.", "interrupted": False}
        await client.wait_for("agent.speech.stopped", timeout=30)
        assert len(client.agent_audio) > 24000 * 2 * 0.5  # at least half a second at 24 kHz
        assert rms(bytes(client.agent_audio)) > 300
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    request = llm.requests[-1]
    assert request["messages"][0] == {"role": "system", "content": "You are the front desk."}
    assert request["messages"][-1] == {"role": "user", "content": "When do you open?"}
    session_id = ready["session_id"]
    transcript = api.get(f"/v1/sessions/{session_id}/transcript").json()["items"]
    assert [(t["speaker"], t["content"]) for t in transcript] == [
        ("USER", "When do you open?"),
        ("AGENT", "We open at nine tomorrow morning."),
    ]


async def typed_call(server, agent: dict, turns: list[str], reply: str) -> None:
    """A call that types `turns`, each answered with `reply`, then ends."""
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        await client.wait_for("session.ready", timeout=30)
        for count, turn in enumerate(turns, start=1):
            await client.send_event({"type": "input.text", "text": turn})
            answer = await client.wait_for("transcript.agent", timeout=30, count=count)
            assert answer["text"] == reply
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)


async def test_a_long_conversation_is_summarized_and_goes_on(server, api, llm):
    """Past the config's `summarize_after_tokens` (1000 for `scripted`), the LLM is asked for a
    summary of the turns before the last two, and later turns send it in their place."""
    llm.script_oneshot("The caller asked about parking and the lift.", when="Conversation history")
    topics = ["parking", "the lift", "opening hours", "prices"]
    turns = [
        f"About {topic}: " + "please tell me everything, " * 48 for topic in topics
    ]  # ~330 tokens each
    await typed_call(server, make_agent(api, pipeline="scripted"), turns, llm.default_reply)
    [summarizing] = [r for r in llm.oneshot_requests if "Conversation history" in json.dumps(r)]
    assert summarizing["messages"][0]["content"].startswith("You are summarizing a conversation")
    asked = summarizing["messages"][-1]["content"]
    assert "About parking" in asked and "About the lift" in asked and "opening hours" not in asked
    # the third turn's reply started the summary; the fourth turn is sent with it
    last = [r for r in llm.requests if r.get("stream")][-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert (
        last[1]["content"] == "Conversation summary: The caller asked about parking and the lift."
    )
    assert [m["content"][:20] for m in last[3::2]] == [turns[2][:20], turns[3][:20]]


async def test_turns_faster_than_the_summary_leave_out_the_oldest(server, api, llm):
    """While the summary is still being written, a request past the config's
    `max_request_tokens` (1600 for `scripted`) goes without its oldest turns, cut where a
    caller's turn begins; the conversation itself keeps them for the summary."""
    llm.script_oneshot(HOLD, when="Conversation history")
    topics = ["parking", "the lift", "opening hours", "prices", "the menu", "deliveries"]
    turns = [
        f"About {topic}: " + "please tell me everything, " * 48 for topic in topics
    ]  # ~330 tokens each
    try:
        await typed_call(server, make_agent(api, pipeline="scripted"), turns, llm.default_reply)
    finally:
        llm.release()
    [summarizing] = [r for r in llm.oneshot_requests if "Conversation history" in json.dumps(r)]
    assert "About parking" in summarizing["messages"][-1]["content"]
    sent = [
        [m["content"][:20] for m in r["messages"] if m["role"] == "user"]
        for r in llm.requests
        if r.get("stream")
    ]
    firsts = [turn[:20] for turn in turns]
    # four turns fit; the fifth leaves out the first, the sixth the first two
    assert sent == [firsts[:1], firsts[:2], firsts[:3], firsts[:4], firsts[1:5], firsts[2:6]]
    last = [r for r in llm.requests if r.get("stream")][-1]["messages"]
    assert [m["role"] for m in last] == ["system", *["user", "assistant"] * 3, "user"]


async def test_client_tool_round_trip(server, api, llm):
    llm.script(ToolCall("lookup_order", {"order_id": "A17"}), "Your order A17 ships tomorrow.")
    agent = make_agent(
        api,
        pipeline="scripted",
        tools=[
            {
                "name": "lookup_order",
                "description": "Look up an order",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
            }
        ],
    )
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "Where is my order A17?"})
        call = await client.wait_for("tool.call", timeout=30)
        assert (call["name"], call["arguments"]) == ("lookup_order", {"order_id": "A17"})
        await client.send_event({"type": "tool.result", "call_id": "nope", "result": {}})
        await client.send_event(
            {
                "type": "tool.result",
                "call_id": call["call_id"],
                "result": {"status": "ships tomorrow"},
            }
        )
        reply = await client.wait_for("transcript.agent", timeout=30)
        assert reply["text"] == "Your order A17 ships tomorrow."
        assert client.of_type("session.error")[0]["code"] == "unknown_call_id"
    tool_message = next(m for m in llm.requests[-1]["messages"] if m["role"] == "tool")
    assert json.loads(tool_message["content"]) == {"status": "ships tomorrow"}
    tools = llm.requests[0]["tools"]
    assert tools[0]["function"]["name"] == "lookup_order"


async def test_max_turns_says_goodbye_and_ends(server, api, llm):
    llm.script("First answer.")
    agent = make_agent(api, pipeline="scripted", max_turns=1)
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "One."})
        await client.wait_for("transcript.agent", timeout=30)
        await client.send_event({"type": "input.text", "text": "Two."})
        ended = await client.wait_for("session.ended", timeout=30)
        assert ended["reason"] == "max_turns"
        goodbye = client.of_type("transcript.agent")[-1]["text"]
        assert "goodbye" in goodbye.lower()
    assert len(llm.requests) == 1
    session = wait_for_status(api, ready["session_id"], "completed")
    assert session["end_reason"] == "max_turns"
