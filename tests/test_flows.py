"""Conversation flows: an agent's flow (examples/flows/) run by Pipecat's FlowManager over
the direct WebSocket with spoken caller turns, its validation, and its state on the session.
The scripted LLM answers each node with the function call the node asks for."""

import copy
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from app.client import SessionClient
from tests.audio import speech
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.twilio_client import TwilioMediaStreamsClient
from tests.helpers.calls import (
    agent_finished,
    agent_ws,
    inline_call,
    transcript,
    wait_for_status,
    wait_resumable,
)
from tests.helpers.dashboard import logged_in
from tests.helpers.servers import make_agent
from tests.helpers.twilio import twilio_session

EXAMPLES = Path(__file__).parent.parent / "examples" / "flows"
CLINIC_PATH = ["greeting", "identify", "collect", "confirm", "book", "end"]
COLLECTED = {"name": "Alice Smith", "date": "Monday", "time": "10:00"}


def example(name: str, **urls: str) -> dict:
    """An example agent, its webhook tools pointed at `urls` (by tool name)."""
    agent = json.loads((EXAMPLES / f"{name}.json").read_text())
    for tool in agent["tools"]:
        if tool["name"] in urls:
            tool["url"] = urls[tool["name"]]
    return agent


def clinic_agent(api, webhook_receiver) -> dict:
    body = example("clinic-appointment", book_appointment=webhook_receiver.url("/book"))
    return make_agent(api, **body, pipeline="scripted", webhook_url=webhook_receiver.url("/events"))


def script_clinic(llm, until: str = "end") -> None:
    """The LLM's side of the clinic call, node by node, up to `until`."""
    steps = {
        "greeting": ["Riverside Clinic, how can I help?", ToolCall("start_booking")],
        "identify": ["May I have your full name?", ToolCall("save_name", {"name": "Alice Smith"})],
        "collect": [
            "Which date and time suit you?",
            ToolCall("save_slot", {"date": "Monday", "time": "10:00"}),
        ],
        "confirm": ["Alice Smith, Monday at 10:00. Is that right?", ToolCall("confirm_booking")],
        "book": [ToolCall("book_appointment")],  # its arguments come from the collected values
        "end": [ToolCall("end_call")],
    }
    for node in CLINIC_PATH[: CLINIC_PATH.index(until) + 1]:
        llm.script(*steps[node])


CALLER = [
    "I would like to book an appointment.",
    "My name is Alice Smith.",
    "Next Monday at ten in the morning.",
    "That is right.",  # one breath: a pause after "Yes," can split the turn and cancel the booking call
]


async def say(client: SessionClient, text: str, spoken: int) -> None:
    """The caller speaks once the agent's `spoken`-th reply has played."""
    await agent_finished(client, spoken)
    await client.stream(speech(text))
    await client.stream_silence(1.0)


async def test_clinic_flow_books_with_the_collected_values(server, api, llm, webhook_receiver):
    agent = clinic_agent(api, webhook_receiver)
    script_clinic(llm)
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        for spoken, text in enumerate(CALLER, start=1):
            await say(client, text, spoken)
        ended = await client.wait_for("session.ended", timeout=60)
    assert ended["reason"] == "agent_ended"
    session_id = ready["session_id"]

    # The webhook tool got the values the earlier nodes collected (the LLM passed none).
    [booking] = [
        r
        for r in webhook_receiver.received
        if r["path"] == "/book" and r["headers"]["X-Switchboard-Session"] == session_id
    ]
    assert json.loads(booking["body"]) == COLLECTED

    session = wait_for_status(api, session_id, "completed")
    assert session["flow"] == {"path": CLINIC_PATH, "values": COLLECTED}

    # Each node is marked in the transcript where the call entered it.
    items = transcript(api, session_id)
    marks = [
        (json.loads(t["content"])["node"], i)
        for i, t in enumerate(items)
        if t["speaker"] == "SYSTEM"
    ]
    assert [node for node, _ in marks] == CLINIC_PATH
    said = [t["content"] for t in items if t["speaker"] == "USER"]
    assert len(said) == len(CALLER)
    first_user = next(i for i, t in enumerate(items) if t["speaker"] == "USER")
    assert marks[0][1] < first_user < marks[1][1]  # identify begins after the caller's request
    tools = [json.loads(t["content"])["name"] for t in items if t["speaker"] == "TOOL"]
    assert tools == ["save_name", "save_slot", "book_appointment", "end_call"]

    # Each node offered the LLM its own functions, and prompts were filled from the values.
    requests = [r for r in llm.requests if r.get("stream")]
    offered = [sorted(t["function"]["name"] for t in r.get("tools", [])) for r in requests]
    assert offered[0] == ["start_booking"]
    assert ["save_name"] in offered and ["book_appointment"] in offered
    confirm = next(
        r for r in requests if r.get("tools", [{}])[0]["function"]["name"] == "confirm_booking"
    )
    assert "Read back the appointment: Alice Smith, Monday at 10:00." in json.dumps(confirm)

    # session.ended carries the flow's state.
    assert ended_hook(webhook_receiver, session_id)["data"]["flow"] == session["flow"]

    # The dashboard's call page draws the flow with the path taken.
    with logged_in(server) as dashboard:
        page = dashboard.get(f"/calls/{session_id}").text
    assert "greeting → identify → collect → confirm → book → end" in page
    assert page.count('<g class="node taken') == len(CLINIC_PATH)
    assert '<g class="node taken current" data-node="end">' in page
    assert page.count('class="edge taken"') == len(CLINIC_PATH) - 1


def ended_hook(receiver, session_id: str, timeout: float = 30) -> dict:
    """The `session.ended` webhook of the session, once delivered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in receiver.events("/events"):
            body = json.loads(request["body"])
            if body["event"] == "session.ended" and body["session_id"] == session_id:
                return body
        time.sleep(0.1)
    raise AssertionError(f"no session.ended webhook for {session_id}")


async def test_pipecat_actions_speak_and_end_the_call(server, api, llm):
    flow = {
        "initial_node": "closed",
        "nodes": {
            "closed": {
                "pre_actions": [{"type": "tts_say", "text": "Welcome to Luigi's."}],
                "task_messages": [{"role": "system", "content": "Say we are closed today."}],
                "post_actions": [{"type": "end_conversation"}],
            }
        },
    }
    agent = make_agent(api, pipeline="scripted", flow=flow)
    llm.script("We are closed today, sorry.")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        ended = await client.wait_for("session.ended", timeout=60)
    assert ended["reason"] == "completed"
    items = transcript(api, ready["session_id"])
    assert [(t["speaker"], t["content"]) for t in items] == [
        ("SYSTEM", '{"node": "closed"}'),
        ("AGENT", "Welcome to Luigi's."),
        ("AGENT", "We are closed today, sorry."),
    ]


async def test_reconnect_mid_flow_resumes_at_the_node_with_its_values(server, api, llm):
    agent = make_agent(api, **example("clinic-appointment"), pipeline="scripted")
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    script_clinic(llm, until="identify")
    llm.script("Which date and time suit you?")
    async with SessionClient(session["websocket_url"]) as client:
        await client.wait_for("transcript.agent", timeout=30)
        for count, text in enumerate(CALLER[:2], start=2):
            await client.send_event({"type": "input.text", "text": text})
            await client.wait_for("transcript.agent", timeout=30, count=count)
    waiting = wait_resumable(api, session["session_id"])
    assert waiting["flow"] == {
        "path": ["greeting", "identify", "collect"],
        "values": {"name": "Alice Smith"},
    }
    # A flow changed meanwhile is the agent's next calls': this one goes on with its own.
    other = {"initial_node": "other", "nodes": {"other": {"task_messages": []}}}
    assert api.patch(f"/v1/agents/{agent['id']}", json={"flow": other}).status_code == 200

    llm.script(
        ToolCall("save_slot", {"date": "Monday", "time": "10:00"}),
        "Alice Smith, Monday at 10:00. Is that right?",
    )
    async with SessionClient(session["websocket_url"]) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        assert ready["resumed"] is True
        await client.stream(speech(CALLER[2]))
        await client.stream_silence(1.0)
        reply = await client.wait_for("transcript.agent", timeout=60)
        assert reply["text"] == "Alice Smith, Monday at 10:00. Is that right?"
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    # Back at `collect` (offering its function), with the name to fill the next node's prompt.
    requests = [r for r in llm.requests if r.get("stream")]
    assert [t["function"]["name"] for t in requests[-2]["tools"]] == ["save_slot"]
    assert "Read back the appointment: Alice Smith, Monday at 10:00." in json.dumps(requests[-1])
    done = wait_for_status(api, session["session_id"], "completed")
    assert done["flow"] == {"path": CLINIC_PATH[:4], "values": COLLECTED}
    marks = [
        t["content"] for t in transcript(api, session["session_id"]) if t["speaker"] == "SYSTEM"
    ]
    assert [json.loads(m)["node"] for m in marks] == CLINIC_PATH[:4]


async def test_a_failed_booking_stays_at_its_node(server, api, llm, webhook_receiver):
    agent = clinic_agent(api, webhook_receiver)
    script_clinic(llm, until="book")
    llm.script("Sorry, I could not book that. Shall I try again?")
    webhook_receiver.fail_next("/book", 500)
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("transcript.agent", timeout=30)
        for count, text in enumerate(CALLER, start=2):
            await client.send_event({"type": "input.text", "text": text})
            await client.wait_for("transcript.agent", timeout=30, count=count)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    done = wait_for_status(api, ready["session_id"], "completed")
    assert done["flow"] == {"path": CLINIC_PATH[:5], "values": COLLECTED}
    # The LLM heard the error and still has the booking function to try again.
    last = [r for r in llm.requests if r.get("stream")][-1]
    assert [t["function"]["name"] for t in last["tools"]] == ["book_appointment"]
    assert "failed with HTTP 500" in json.dumps(last["messages"])


async def test_clinic_flow_over_twilio_ends_and_hangs_up(
    twilio_server, tw, twilio_rest, llm, webhook_receiver
):
    agent = clinic_agent(tw, webhook_receiver)
    script_clinic(llm)
    twiml, session = twilio_session(tw, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        for spoken, text in enumerate(CALLER, start=1):
            await client.wait_marks(spoken, timeout=60)
            await client.send_audio(speech(text, sample_rate=8000))
            await client.send_silence(1.0)
        await client.wait_closed(timeout=60)
    assert twilio_rest.wait_for_hang_up(client.call_sid)
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "agent_ended"
    assert done["flow"] == {"path": CLINIC_PATH, "values": COLLECTED}


async def test_restaurant_flow_transfers_to_a_human_from_any_node(
    twilio_server, tw, twilio_rest, llm
):
    body = example("restaurant-reservation")
    agent = make_agent(tw, **body, pipeline="scripted")
    llm.script("Welcome to Luigi's. For how many people, and when?", ToolCall("transfer_to_human"))
    twiml, session = twilio_session(tw, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=60)
        await client.send_audio(speech("Can I speak to a person, please?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_closed(timeout=60)
    path = f"/2010-04-01/Accounts/{twilio_rest.account_sid}/Calls/{client.call_sid}.json"
    [update] = [r for r in twilio_rest.requests if r.path == path]
    assert "<Dial>+14155550142</Dial>" in update.value("Twiml")
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "transferred"
    assert done["flow"] == {"path": ["greeting"], "values": {}}


async def test_inline_user_first_call_runs_a_flow(server, api, llm):
    body = example("clinic-appointment")
    llm.script(ToolCall("start_booking"), "May I have your full name?")
    call = inline_call(
        api, flow=body["flow"], tools=body["tools"], greeting="", firstSpeaker="user"
    )
    async with SessionClient(call["url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.stream(speech(CALLER[0]))  # (typed text could beat the node's setup)
        await client.stream_silence(1.0)
        reply = await client.wait_for("transcript.agent", timeout=60)
        assert reply["text"] == "May I have your full name?"
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    # The first node waited for the caller: the LLM's first turn answered them.
    first = [r for r in llm.requests if r.get("stream")][0]
    assert first["messages"][-1]["role"] == "user"
    assert [t["function"]["name"] for t in first["tools"]] == ["start_booking"]
    done = wait_for_status(api, call["session_id"], "completed")
    assert done["flow"] == {"path": ["greeting", "identify"], "values": {}}
    refused = api.post(
        "/v1/calls/inline",
        json={
            "systemPrompt": body["system_prompt"],
            "voice": "joe",
            "language": "en",
            "greeting": "",
            "pipeline": "scripted",
            "flow": {**body["flow"], "initial_node": "nope"},
            "tools": body["tools"],
        },
    )
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_flow"


def broken(mutate) -> dict:
    body = example("clinic-appointment")
    mutate(body["flow"])
    return body


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda f: f.update(initial_node="welcome"),
            {
                "node": None,
                "field": "initial_node",
                "message": "'welcome' is not a node of the flow",
            },
        ),
        (
            lambda f: f["nodes"]["confirm"]["functions"][1].update(transition_to="retry"),
            {
                "node": "confirm",
                "field": "functions.1.transition_to",
                "message": "'retry' is not a node of the flow",
            },
        ),
        (
            lambda f: f["nodes"]["book"]["functions"][0].update(name="book_it"),
            {"node": "book", "field": "functions.0.name"},
        ),
        (
            lambda f: f["nodes"]["end"].pop("task_messages"),
            {"node": "end", "field": "(node)", "message": "'task_messages' is a required property"},
        ),
        (
            lambda f: f["nodes"]["identify"].update(context_strategy="forget"),
            {"node": "identify", "field": "context_strategy"},
        ),
        (
            lambda f: f["nodes"]["end"].update(post_actions=[{"type": "function", "handler": "x"}]),
            {"node": "end", "field": "post_actions.0.type"},
        ),
        (
            lambda f: f["nodes"]["end"]["task_messages"][0].update(content="Bye {{ surname }}."),
            {
                "node": "end",
                "field": "task_messages.0.content",
                "message": "{{ surname }} is not a value any function of the flow collects",
            },
        ),
    ],
    ids=[
        "missing-initial-node",
        "unknown-target",
        "no-handler",
        "schema",
        "enum",
        "action",
        "placeholder",
    ],
)
def test_invalid_flows_are_refused_naming_node_and_field(api, mutate, problem):
    response = api.post("/v1/agents", json={**broken(mutate), "pipeline": "scripted"})
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "invalid_flow"
    [found] = error["details"]["problems"]
    assert problem.items() <= found.items()
    if problem["node"]:
        assert f"node '{problem['node']}' {problem['field']}" in error["message"]


def test_flow_is_stored_shown_and_checked_against_tool_changes(api):
    body = example("clinic-appointment")
    agent = make_agent(api, **body, pipeline="scripted")
    assert agent["flow"] == body["flow"]
    assert api.get(f"/v1/agents/{agent['id']}").json()["flow"] == body["flow"]
    # Dropping a tool the flow names is refused; so is a broken flow in an update.
    tools = [t for t in body["tools"] if t["name"] != "save_slot"]
    refused = api.patch(f"/v1/agents/{agent['id']}", json={"tools": tools})
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_flow"
    assert "save_slot" in refused.json()["message"]
    flow = copy.deepcopy(body["flow"])
    flow["initial_node"] = "nowhere"
    assert api.patch(f"/v1/agents/{agent['id']}", json={"flow": flow}).status_code == 422
    cleared = api.patch(f"/v1/agents/{agent['id']}", json={"flow": None, "tools": tools})
    assert cleared.status_code == 200 and cleared.json()["flow"] is None


def test_dashboard_edits_and_draws_a_flow(server, api):
    body = example("clinic-appointment")
    form = {
        "name": "Clinic",
        "pipeline": "scripted",
        "voice_id": "joe",
        "language": "en",
        "system_prompt": body["system_prompt"],
        "tools": json.dumps(body["tools"]),
    }
    flow = copy.deepcopy(body["flow"])
    flow["nodes"]["confirm"]["functions"][1]["transition_to"] = "retry"
    with logged_in(server) as client:
        bad = client.post("/agents/new", data={**form, "flow": json.dumps(flow)})
        assert bad.status_code == 422
        assert '<ul class="error" id="flow-errors">' in bad.text
        assert (
            "<li>node &#39;confirm&#39; functions.1.transition_to: &#39;retry&#39; is not a node "
            "of the flow</li>" in bad.text
        )
        assert "&#34;retry&#34;" in bad.text  # the form keeps what was typed
        not_json = client.post("/agents/new", data={**form, "flow": "{"})
        assert not_json.status_code == 422 and "flow: not valid JSON" in not_json.text

        created = client.post("/agents/new", data={**form, "flow": json.dumps(body["flow"])})
        assert created.status_code == 303
        agent_id = created.headers["location"].rsplit("/", 1)[1]
        assert api.get(f"/v1/agents/{agent_id}").json()["flow"] == body["flow"]
        page = client.get(f"/agents/{agent_id}").text
    assert '<svg class="flow-graph"' in page
    nodes = set(re.findall(r'<g class="node" data-node="(\w+)">', page))
    assert nodes == set(CLINIC_PATH)
    # One arrow per pair of nodes a function moves between (book branches to end and collect).
    assert page.count('<path class="edge"') == 7
    assert "<title>book_appointment: book → collect</title>" in page


def test_openapi_documents_flows(server, api):
    schema = httpx.get(f"{server.url}/v1/flows/schema").json()  # no key needed
    assert schema["title"] == "FlowConfig" and "transition_only" in json.dumps(schema)
    spec = api.get("/openapi.json").json()
    assert "/v1/flows/schema" in spec["paths"]
    flow = spec["components"]["schemas"]["AgentCreate"]["properties"]["flow"]
    assert "transition_only" in json.dumps(flow)
    assert "SYSTEM" in json.dumps(spec["components"]["schemas"]["TranscriptEntryOut"])
    assert "FlowStateOut" in spec["components"]["schemas"]
