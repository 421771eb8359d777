"""Tools over the direct WebSocket: webhook tools against a local receiver, client tools,
the built-in `end_call`, argument validation and timeouts. The scripted LLM makes the
tool calls certain; its recorded requests show what went back to the LLM."""

import asyncio
import hashlib
import hmac
import json
import time

import pytest
from aiohttp import web

from app.client import SessionClient
from tests.audio import rms
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.threaded import ThreadedServer
from tests.helpers.calls import agent_ws, wait_for_status
from tests.helpers.servers import make_agent

HOURS_SCHEMA = {
    "type": "object",
    "properties": {"day": {"type": "string", "enum": ["monday", "tuesday"]}},
    "required": ["day"],
}


class ToolReceiver(ThreadedServer):
    """Answers webhook tools: `/hours` with opening hours, `/slow` after 5 s, `/broken` with a 500."""

    def __init__(self):
        super().__init__()
        self.received: list[dict] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{path:.*}", self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if request.path == "/slow":
            await asyncio.sleep(5)
        if request.path == "/broken":
            return web.json_response({"detail": "database down"}, status=500)
        return web.json_response({"opens": "9:00", "closes": "17:00"})


@pytest.fixture(scope="module")
def receiver():
    server = ToolReceiver().start()
    yield server
    server.stop()


def webhook_tool(name: str, url: str, **fields) -> dict:
    return {
        "name": name,
        "description": "Opening hours for a day",
        "parameters": HOURS_SCHEMA,
        "type": "webhook",
        "url": url,
        **fields,
    }


def conversation(llm) -> list[dict]:
    """The LLM requests the conversation made (post-call analysis asks the LLM too, unstreamed)."""
    return [r for r in llm.requests if r.get("stream")]


def tool_messages(request: dict) -> list[str]:
    """What went back to the LLM as tool results in one chat request."""
    return [m["content"] for m in request["messages"] if m.get("role") == "tool"]


def tool_entries(api, session_id: str) -> list[dict]:
    items = api.get(f"/v1/sessions/{session_id}/transcript").json()["items"]
    return [json.loads(t["content"]) for t in items if t["speaker"] == "TOOL"]


async def ask(client: SessionClient, text: str, reply_number: int) -> dict:
    await client.send_event({"type": "input.text", "text": text})
    return await client.wait_for("transcript.agent", timeout=60, count=reply_number)


async def test_webhook_tool_answer_reaches_the_llm(server, api, llm, receiver):
    agent = make_agent(
        api, pipeline="scripted", tools=[webhook_tool("get_hours", receiver.url("/hours"))]
    )
    secret = agent["tools"][0]["secret"]
    assert secret.startswith("whsec_")
    llm.script(ToolCall("get_hours", {"day": "monday"}), "On Monday we open at nine.")
    receiver.received.clear()
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        reply = await ask(client, "When do you open on Monday?", 1)
        await client.wait_for("agent.speech.stopped", timeout=30)
        assert reply["text"] == "On Monday we open at nine."
        assert rms(bytes(client.agent_audio)) > 300
        assert not client.of_type("tool.call")  # the server ran it, not the client
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    [hook] = receiver.received
    assert json.loads(hook["body"]) == {"day": "monday"}
    assert hook["headers"]["Content-Type"] == "application/json"
    assert hook["headers"]["X-Switchboard-Session"] == ready["session_id"]
    timestamp = hook["headers"]["X-Switchboard-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + hook["body"], hashlib.sha256
    ).hexdigest()
    assert hook["headers"]["X-Switchboard-Signature"] == f"sha256={expected}"
    assert abs(int(timestamp) - time.time()) < 120

    [result] = tool_messages(conversation(llm)[-1])
    assert json.loads(result) == {"opens": "9:00", "closes": "17:00"}
    [entry] = tool_entries(api, ready["session_id"])
    assert entry["name"] == "get_hours" and entry["arguments"] == {"day": "monday"}
    assert entry["result"] == {"opens": "9:00", "closes": "17:00"}
    items = api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
    assert [t["speaker"] for t in items] == ["USER", "TOOL", "AGENT"]


async def test_tool_failures_go_back_to_the_llm_as_errors(server, api, llm, receiver):
    tools = [
        webhook_tool("slow_lookup", receiver.url("/slow"), timeout_secs=1),
        webhook_tool("get_hours", receiver.url("/hours")),
        webhook_tool("broken_lookup", receiver.url("/broken")),
    ]
    agent = make_agent(api, pipeline="scripted", tools=tools)
    llm.script(
        ToolCall("slow_lookup", {"day": "monday"}),
        "Sorry, the lookup is slow today.",
        ToolCall("get_hours", {"day": 5}),
        "Sorry, I could not look that up.",
        ToolCall("broken_lookup", {"day": "tuesday"}),
        "Sorry, our system is down.",
    )
    receiver.received.clear()
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        asked = time.monotonic()
        first = await ask(client, "When do you open on Monday?", 1)
        answered_in = time.monotonic() - asked
        timeout_error = tool_messages(conversation(llm)[-1])[-1]
        second = await ask(client, "And on day five?", 2)
        invalid_error = tool_messages(conversation(llm)[-1])[-1]
        third = await ask(client, "And on Tuesday?", 3)
        broken_error = tool_messages(conversation(llm)[-1])[-1]
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    # A webhook that outlives its timeout: an error for the LLM, and the call goes on at once.
    assert first["text"] == "Sorry, the lookup is slow today." and answered_in < 4.5
    assert "did not answer within 1s" in json.loads(timeout_error)["error"]
    # Arguments that don't fit the schema: never sent, an error naming the problem instead.
    assert second["text"] == "Sorry, I could not look that up."
    message = json.loads(invalid_error)["error"]
    assert "invalid arguments" in message and "day" in message
    assert [r["path"] for r in receiver.received] == ["/slow", "/broken"]
    # A webhook answering 500: an error with its status.
    assert third["text"] == "Sorry, our system is down."
    assert "HTTP 500" in json.loads(broken_error)["error"]
    entries = tool_entries(api, ready["session_id"])
    assert [e["name"] for e in entries] == ["slow_lookup", "get_hours", "broken_lookup"]
    assert all("error" in e["result"] for e in entries)
    assert wait_for_status(api, ready["session_id"], "completed")["end_reason"] == "caller_hangup"


async def test_client_tool_round_trip_is_recorded(server, api, llm):
    tool = {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
    agent = make_agent(api, pipeline="scripted", tools=[tool])
    llm.script(ToolCall("lookup_order", {"order_id": "A1"}), "Your order ships today.")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "Where is my order A1?"})
        call = await client.wait_for("tool.call", timeout=30)
        assert (call["name"], call["arguments"]) == ("lookup_order", {"order_id": "A1"})
        await client.send_event(
            {"type": "tool.result", "call_id": call["call_id"], "result": {"status": "shipping"}}
        )
        reply = await client.wait_for("transcript.agent", timeout=30)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    assert reply["text"] == "Your order ships today."
    assert json.loads(tool_messages(conversation(llm)[-1])[0]) == {"status": "shipping"}
    [entry] = tool_entries(api, ready["session_id"])
    assert entry == {
        "call_id": call["call_id"],
        "name": "lookup_order",
        "arguments": {"order_id": "A1"},
        "result": {"status": "shipping"},
    }


async def test_end_call_tool_says_goodbye_and_hangs_up(server, api, llm):
    tool = {
        "name": "end_call",
        "description": "Hang up once the caller is done",
        "type": "end_call",
    }
    agent = make_agent(api, pipeline="scripted", tools=[tool])
    llm.script(ToolCall("end_call", {}))
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "That's all, thank you, bye."})
        ended = await client.wait_for("session.ended", timeout=60)
        deadline = time.monotonic() + 10
        while not client.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert client.closed
    assert ended["reason"] == "agent_ended"
    assert (
        len(client.agent_audio) > 16000 * 2 * 0.8 and rms(bytes(client.agent_audio)) > 300
    )  # the goodbye
    session = wait_for_status(api, ready["session_id"], "completed")
    assert session["end_reason"] == "agent_ended"
    items = api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
    assert [t["speaker"] for t in items] == ["USER", "TOOL", "AGENT"]
    assert "goodbye" in items[-1]["content"].lower()
    assert len(conversation(llm)) == 1  # the LLM was not asked again after hanging up


TRANSFER = {
    "name": "x",
    "description": "d",
    "type": "transfer_call",
    "phone_number": "+14155550142",
}


def test_tool_definitions_are_checked(api):
    bad = [
        ({"name": "x", "description": "d", "type": "webhook"}, "needs a url"),
        ({"name": "x", "description": "d", "type": "transfer_call"}, "needs a phone_number"),
        (
            {
                "name": "x",
                "description": "d",
                "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}},
            },
            "not a valid JSON Schema",
        ),
        ({"name": "x", "description": "d", "type": "webhook", "url": "ftp://example.com"}, "url"),
        ({**TRANSFER, "mode": "lukewarm"}, "mode"),
        ({**TRANSFER, "mode": "warm", "answer_timeout_secs": 2}, "answer_timeout_secs"),
        ({**TRANSFER, "mode": "warm", "answer_timeout_secs": 121}, "answer_timeout_secs"),
        ({**TRANSFER, "answer_timeout_secs": 20}, "answer_timeout_secs"),  # cold: no timeout
        ({"name": "x", "description": "d", "mode": "warm"}, "mode"),  # not a transfer
    ]
    for tool, words in bad:
        response = api.post(
            "/v1/agents",
            json={"name": "A", "voice_id": "joe", "system_prompt": "p", "tools": [tool]},
        )
        assert response.status_code == 422, response.text
        assert words in response.json()["message"], response.json()
    warm = {**TRANSFER, "mode": "warm", "answer_timeout_secs": 45}
    agent = make_agent(api, tools=[warm, {**TRANSFER, "name": "y"}])
    assert agent["tools"][0] == {**warm, "parameters": {"type": "object", "properties": {}}}
    assert "mode" not in agent["tools"][1] and "answer_timeout_secs" not in agent["tools"][1]


@pytest.mark.parametrize("mode", ["cold", "warm"])
async def test_transfer_call_off_twilio_is_a_tool_error(server, api, llm, mode):
    tool = {
        "name": "transfer",
        "description": "Transfer the caller",
        "type": "transfer_call",
        "phone_number": "+14155550142",
        "mode": mode,
    }
    agent = make_agent(api, pipeline="scripted", tools=[tool])
    llm.script(ToolCall("transfer", {}), "Sorry, I can't transfer this call.")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        reply = await ask(client, "Transfer me, please.", 1)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    assert reply["text"] == "Sorry, I can't transfer this call."
    assert (
        "only works on Twilio calls"
        in json.loads(tool_messages(conversation(llm)[-1])[-1])["error"]
    )
    assert wait_for_status(api, ready["session_id"], "completed")["end_reason"] == "caller_hangup"
