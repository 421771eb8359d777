"""Logs and traces of a real call: JSON log lines tagged with the call's ids, and OpenTelemetry
spans exported over OTLP from conversation down to services, tools and webhook deliveries."""

import asyncio
import json
import time

import pytest

from app.client import SessionClient
from tests.audio import speech
from tests.fakes.otlp_collector import OTLPCollector
from tests.fakes.scripted_llm import ToolCall
from tests.helpers.calls import agent_ws
from tests.helpers.servers import make_agent, start_server

QUESTION = "When do you open on Monday?"
REPLY = "On Monday we open at nine."


@pytest.fixture(scope="module")
def collector():
    fake = OTLPCollector().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def observed_call(tmp_path_factory, scripted_llm, collector, webhook_receiver):
    """One spoken call with a webhook tool and a `session.ended` webhook, on a server that logs
    JSON and exports traces: the server, the agent and the session id."""
    server = start_server(
        tmp_path_factory.mktemp("observed"),
        preload=["scripted"],
        env={
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "SWITCHBOARD_LOG_FORMAT": "json",
            "SWITCHBOARD_LOG_LEVEL": "DEBUG",  # Pipecat's lines about a call are mostly DEBUG
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_SERVICE_NAME": "switchboard-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    try:
        api = server.client()
        tool = {
            "name": "get_hours",
            "description": "Opening hours for a day",
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
            "type": "webhook",
            "url": webhook_receiver.url("/hours"),
        }
        agent = make_agent(
            api,
            pipeline="scripted",
            greeting="Hello, how can I help?",
            tools=[tool],
            webhook_url=webhook_receiver.url("/events"),
            webhook_events=["session.ended"],
        )
        scripted_llm.reset()
        scripted_llm.script(ToolCall("get_hours", {"day": "monday"}), REPLY)

        async def call() -> str:
            async with SessionClient(agent_ws(server, agent["id"])) as client:
                ready = await client.wait_for("session.ready", timeout=30)
                await client.wait_for("agent.speech.stopped", timeout=30)  # the greeting
                await client.stream(speech(QUESTION, tail_secs=1.0))
                assert (await client.wait_for("transcript.agent", timeout=60, count=2))[
                    "text"
                ] == REPLY
                await client.wait_for("agent.speech.stopped", timeout=30, count=2)
                await client.send_event({"type": "session.end"})
                await client.wait_for("session.ended", timeout=10)
            return ready["session_id"]

        session_id = asyncio.run(call())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            webhook_receiver.events("/events") and collector.named("job webhook.deliver")
        ):
            time.sleep(0.2)
        yield server, agent, session_id
    finally:
        server.stop()


def _log_lines(server) -> list[dict]:
    lines = [line for line in server.log().splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, not_json[:5]
    return [json.loads(line) for line in lines]


def test_json_log_lines_carry_the_calls_ids(observed_call):
    server, agent, session_id = observed_call
    lines = _log_lines(server)
    of_call = [line for line in lines if line.get("session_id") == session_id]
    assert {line["agent_id"] for line in of_call} == {agent["id"]}
    [account_id] = {line["account_id"] for line in of_call}
    assert account_id and account_id.startswith("acc")
    # Pipecat's own lines about the call, and the server's, carry them.
    assert any(line["logger"].startswith("pipecat.") for line in of_call), of_call[:3]
    assert any(line["logger"].startswith("app.") for line in of_call), of_call[:3]
    # uvicorn's access log comes through the same sink.
    assert any('"POST /v1/agents HTTP/1.1" 201' in line["message"] for line in lines)
    for line in lines:
        assert {"time", "level", "message", "logger"} <= set(line)


def test_logs_hold_no_secrets_and_no_words_at_info(observed_call):
    server, _, _ = observed_call
    assert server.api_key not in server.log()
    at_info = [line for line in _log_lines(server) if line["level"] not in ("TRACE", "DEBUG")]
    assert at_info
    for line in at_info:
        assert QUESTION.rstrip("?") not in line["message"] and REPLY not in line["message"]


def _one(spans, name):
    assert len(spans) == 1, (name, spans)
    return spans[0]


def test_a_call_exports_its_span_tree(observed_call, collector):
    server, agent, session_id = observed_call
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not collector.named("conversation"):
        time.sleep(0.2)
    by_id = {span.span_id: span for span in collector.spans}

    conversation = _one(
        [
            s
            for s in collector.named("conversation")
            if s.attributes.get("conversation.id") == session_id
        ],
        "conversation",
    )
    assert conversation.attributes["session.id"] == session_id
    assert conversation.attributes["agent.id"] == agent["id"]
    assert conversation.attributes["account.id"].startswith("acc")
    assert conversation.resource["service.name"] == "switchboard-under-test"
    assert (
        conversation.resource["service.instance.id"]
        == server.client().get("/health").json()["node_id"]
    )

    turns = [s for s in collector.named("turn") if s.parent_id == conversation.span_id]
    assert len(turns) >= 2, collector.spans  # the greeting's and the caller's
    in_turns = {s.name for s in collector.spans if s.parent_id in {t.span_id for t in turns}}
    assert {"stt", "llm", "tts"} <= in_turns, in_turns

    # Switchboard's own: admission, the tool call and its HTTP request, the webhook delivery.
    start = _one(
        [
            s
            for s in collector.named("session.start")
            if s.attributes.get("session.id") == session_id
        ],
        "session.start",
    )
    assert by_id[start.parent_id].name.endswith("/v1/agents/{agent_id}/session")  # the socket
    tool = _one(
        [s for s in collector.named("tool.call") if s.attributes.get("session.id") == session_id],
        "tool.call",
    )
    assert tool.attributes["tool.name"] == "get_hours"
    assert any(s.parent_id == tool.span_id and s.name == "POST" for s in collector.spans)
    delivery = _one(
        [
            s
            for s in collector.named("job webhook.deliver")
            if s.attributes.get("session.id") == session_id
        ],
        "job webhook.deliver",
    )
    assert any(s.parent_id == delivery.span_id and s.name == "POST" for s in collector.spans)
    # REST requests.
    assert collector.named("POST /v1/agents")
