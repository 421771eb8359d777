"""The Calls API: what `POST /v1/calls` and `POST /v1/calls/inline` return for each
connection type, their validation, and call controls on stored agents."""

from urllib.parse import parse_qs, urlparse
from xml.etree import ElementTree

import pytest

from app.client import SessionClient
from tests.audio import speech
from tests.fakes.twilio_client import parse_twiml
from tests.helpers.servers import make_agent

INLINE = {
    "systemPrompt": "You are a helpful receptionist.",
    "voice": "joe",
    "language": "en",
    "greeting": "Hello.",
    "pipeline": "scripted",
}


def test_call_for_a_stored_agent_per_connection_type(server, api):
    agent = make_agent(api, pipeline="scripted")
    websocket = api.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "websocket"})
    assert websocket.status_code == 201, websocket.text
    body = websocket.json()
    assert body["markup"] is None and body["connection_type"] == "websocket"
    assert body["url"] == body["session"]["websocket_url"]
    assert body["url"].startswith(server.ws_url(f"/v1/sessions/{body['session_id']}/ws?token="))
    assert body["session"]["agent_id"] == agent["id"] and body["session"]["status"] == "created"

    twilio = api.post(
        "/v1/calls/create", json={"agentId": agent["id"]}
    )  # the alias; twilio is the default
    assert twilio.status_code == 201, twilio.text
    call = twilio.json()
    assert call["connection_type"] == "twilio" and call["session"]["connection_type"] == "twilio"
    stream_url, parameters = parse_twiml(call["markup"])
    assert stream_url == call["url"] == server.ws_url("/v1/sessions/twilio/stream")
    assert parameters["token"]

    telnyx = api.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "telnyx"}).json()
    stream = ElementTree.fromstring(telnyx["markup"]).find("./Connect/Stream")
    assert stream.get("url") == telnyx["url"] and telnyx["url"].startswith(
        server.ws_url("/v1/sessions/telnyx/stream")
    )
    plivo = api.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "plivo"}).json()
    assert ElementTree.fromstring(plivo["markup"]).find("Stream").text == plivo["url"]
    assert parse_qs(urlparse(plivo["url"]).query)["token"]

    webrtc = api.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "webrtc"}).json()
    assert (
        webrtc["url"] == f"{server.url}/v1/agents/{agent['id']}/webrtc/offer"
        and webrtc["session"] is None
    )


def test_calls_api_refusals(server, api):
    missing = api.post("/v1/calls", json={"agentId": "agt_missing", "connectionType": "websocket"})
    assert missing.status_code == 404 and missing.json()["code"] == "agent_not_found"
    agent = make_agent(api, pipeline="scripted")
    bad_type = api.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "fax"})
    assert bad_type.status_code == 422 and "connectionType" in bad_type.json()["message"]
    api.patch(f"/v1/agents/{agent['id']}", json={"status": "paused"})
    paused = api.post("/v1/calls", json={"agentId": agent["id"], "connectionType": "websocket"})
    assert paused.status_code == 409 and paused.json()["code"] == "agent_paused"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("maxDuration", 30, "between 60 and 7200"),
        ("maxDuration", 7201, "between 60 and 7200"),
        ("inactivityTimeout", 5, "between 10 and 300"),
        ("inactivityTimeout", 301, "between 10 and 300"),
        ("temperature", 1.5, "between 0 and 1"),
        ("firstSpeaker", "nobody", "firstSpeaker"),
        ("inactivityAction", "shout", "inactivityAction"),
    ],
)
def test_inline_call_ranges_are_422_naming_the_field(server, api, field, value, words):
    response = api.post("/v1/calls/inline", json={**INLINE, field: value})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert field in body["message"] and words in body["message"], body["message"]


def test_inline_call_other_refusals(server, api):
    for required in ("systemPrompt", "voice", "language", "greeting"):
        body = {k: v for k, v in INLINE.items() if k != required}
        response = api.post("/v1/calls/inline", json=body)
        assert response.status_code == 422 and required in response.json()["message"]
    voice = api.post("/v1/calls/inline", json={**INLINE, "voice": "Mark"})
    assert voice.status_code == 422 and voice.json()["code"] == "unknown_voice"
    webrtc = api.post("/v1/calls/inline", json={**INLINE, "connectionType": "webrtc"})
    assert webrtc.status_code == 422 and webrtc.json()["code"] == "unsupported_connection_type"
    unknown = api.post("/v1/calls/inline", json={**INLINE, "colour": "blue"})
    assert unknown.status_code == 422 and "colour" in unknown.json()["message"]


def test_call_bodies_take_snake_case_names_and_camel_case_aliases(server, api):
    agent = make_agent(api, pipeline="scripted")
    stored = api.post("/v1/calls", json={"agent_id": agent["id"], "connection_type": "websocket"})
    assert stored.status_code == 201 and stored.json()["connection_type"] == "websocket"
    snake = {
        "system_prompt": INLINE["systemPrompt"],
        "voice_id": INLINE["voice"],
        "language": "en",
        "greeting": "Hello.",
        "pipeline": "scripted",
        "max_duration": 120,
        "connection_type": "websocket",
    }
    inline = api.post("/v1/calls/inline", json=snake)
    assert inline.status_code == 201, inline.text
    session = api.get(f"/v1/sessions/{inline.json()['session_id']}").json()
    assert session["connection_type"] == "websocket"
    missing = api.post("/v1/calls/inline", json={k: v for k, v in snake.items() if k != "voice_id"})
    assert missing.status_code == 422
    assert "voice_id (or voice)" in missing.json()["message"], missing.json()["message"]
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    inline_names = set(schemas["InlineCallCreate"]["properties"])
    assert {"system_prompt", "voice_id", "max_duration", "connection_type"} <= inline_names
    assert not {"systemPrompt", "voice", "maxDuration"} & inline_names
    assert {"agent_id", "from_number", "to_number"} <= set(
        schemas["PhoneSessionCreate"]["properties"]
    )


def test_inline_call_session_has_no_stored_agent(server, api):
    response = api.post("/v1/calls/inline", json={**INLINE, "connectionType": "websocket"})
    assert response.status_code == 201, response.text
    call = response.json()
    session = api.get(f"/v1/sessions/{call['session_id']}").json()
    assert session["agent_id"] is None and session["connection_type"] == "websocket"
    assert session["websocket_url"] == call["url"]


def test_controls_on_a_stored_agent(server, api):
    agent = make_agent(api, pipeline="scripted")
    assert (agent["first_speaker"], agent["interruptible"], agent["max_duration"]) == (
        "agent",
        True,
        3000,
    )
    assert (
        agent["inactivity_timeout"],
        agent["inactivity_action"],
        agent["recording_enabled"],
    ) == (
        None,
        "end_call",
        True,
    )
    controls = {
        "first_speaker": "user",
        "interruptible": False,
        "max_duration": 120,
        "inactivity_timeout": 20,
        "inactivity_action": "prompt",
        "recording_enabled": False,
    }
    updated = api.patch(f"/v1/agents/{agent['id']}", json=controls).json()
    assert {k: updated[k] for k in controls} == controls
    assert (
        api.patch(f"/v1/agents/{agent['id']}", json={"inactivity_timeout": None}).json()[
            "inactivity_timeout"
        ]
        is None
    )
    for field, value in [
        ("max_duration", 59),
        ("inactivity_timeout", 301),
        ("first_speaker", "x"),
        ("interruptible", None),
    ]:
        response = api.patch(f"/v1/agents/{agent['id']}", json={field: value})
        assert response.status_code == 422 and field in response.json()["message"], response.text


async def test_stored_agent_controls_apply_to_its_calls(server, api, llm):
    llm.script("We open at nine.")
    agent = make_agent(api, pipeline="scripted", greeting="Not to be spoken.", first_speaker="user")
    call = api.post(
        "/v1/calls", json={"agentId": agent["id"], "connectionType": "websocket"}
    ).json()
    question = speech("When do you open?", tail_secs=1.5)
    async with SessionClient(call["url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.stream_silence(2.0)
        assert not client.agent_audio
        await client.stream(question)
        reply = await client.wait_for("transcript.agent", timeout=30)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    assert reply["text"] == "We open at nine."


def test_openapi_documents_the_calls_api(server, api):
    spec = api.get("/openapi.json").json()
    for path in (
        "/v1/calls",
        "/v1/calls/create",
        "/v1/calls/inline",
        "/v1/sessions/{session_id}/recording",
    ):
        assert path in spec["paths"], path
    inline = spec["components"]["schemas"]["InlineCallCreate"]["properties"]
    assert (inline["max_duration"]["minimum"], inline["max_duration"]["maximum"]) == (60, 7200)


async def test_inline_model_and_temperature_reach_the_llm(server, api, llm):
    llm.script("We open at nine.")
    call = api.post(
        "/v1/calls/inline",
        json={**INLINE, "connectionType": "websocket", "model": "house-model", "temperature": 0.3},
    ).json()
    async with SessionClient(call["url"]) as client:
        await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "When do you open?"})
        await client.wait_for("transcript.agent", timeout=30, count=2)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    request = [r for r in llm.requests if r.get("stream")][-1]
    assert (request["model"], request["temperature"]) == ("house-model", 0.3)
