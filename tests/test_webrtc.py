"""Browser-style calls over WebRTC, driven by a real aiortc peer: Piper speech in, the agent's
voice and the session events back over the peer connection, ICE candidates trickled by PATCH."""

import html
import json
import re

import httpx
from fastapi.testclient import TestClient

from app.deps import LOGIN_COOKIE
from app.main import create_app
from app.settings import Settings
from tests.audio import speech
from tests.helpers.calls import AUDIO_OFFER, MINIMAL_OFFER, wait_for_status
from tests.helpers.servers import ADMIN_KEY, TEST_PIPELINES, make_agent
from tests.helpers.webrtc import WebRTCCaller


async def test_browser_call_hears_the_caller_and_answers(server, api, llm):
    llm.script("We open at nine tomorrow morning.")
    agent = make_agent(api, pipeline="scripted", greeting="Hello, thanks for calling the clinic.")
    caller = WebRTCCaller(server, agent["id"], server.headers)
    try:
        await caller.connect()
        session_id = caller.answer["session_id"]
        greeting = await caller.wait_for("transcript.agent", timeout=60)
        assert greeting["text"] == "Hello, thanks for calling the clinic."
        await caller.wait_for("agent.speech.stopped", timeout=30)
        assert caller.loud_audio_secs > 0.8, caller.loud_audio_secs  # the greeting was heard

        caller.send({"type": "no.such.event"})
        error = await caller.wait_for("session.error", timeout=10)
        assert error["code"] == "unknown_event"

        heard_before = caller.loud_audio_secs
        caller.mic.say(speech("What time do you open tomorrow morning?", tail_secs=1.5))
        await caller.wait_for("input.speech.started", timeout=30)
        heard = await caller.wait_for("transcript.user", timeout=60)
        reply = await caller.wait_for("transcript.agent", timeout=60, count=2)
        await caller.wait_for("agent.speech.stopped", timeout=60, count=2)
        assert reply["text"] == "We open at nine tomorrow morning."
        assert caller.loud_audio_secs - heard_before > 0.8, caller.loud_audio_secs

        caller.send({"type": "session.end"})
        ended = await caller.wait_for("session.ended", timeout=15)
        assert ended["reason"] == "caller_hangup"
    finally:
        await caller.close()

    words = heard["text"].lower()
    assert "open" in words and "tomorrow" in words, heard
    session = wait_for_status(api, session_id, "completed", timeout=30)
    assert session["connection_type"] == "webrtc" and session["end_reason"] == "caller_hangup"
    transcript = api.get(f"/v1/sessions/{session_id}/transcript").json()["items"]
    assert [t["speaker"] for t in transcript] == ["AGENT", "USER", "AGENT"]
    assert transcript[2]["content"] == "We open at nine tomorrow morning."


async def test_browser_hang_up_without_goodbye_ends_the_session(server, api):
    agent = make_agent(api, pipeline="scripted", greeting="Hi there.")
    caller = WebRTCCaller(server, agent["id"], server.headers)
    try:
        await caller.connect()
        await caller.wait_for("agent.speech.started", timeout=60)
    finally:
        await caller.close()  # the tab closes: no session.end
    session = wait_for_status(api, caller.answer["session_id"], "completed", timeout=60)
    assert session["end_reason"] == "caller_hangup"


def test_offer_refusals(server, api):
    agent = make_agent(api, pipeline="scripted")
    url = f"/v1/agents/{agent['id']}/webrtc/offer"
    body = {"sdp": AUDIO_OFFER, "type": "offer"}

    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        response = anonymous.post(url, json=body)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
        response = anonymous.post(url, json=body, headers={"X-API-Key": "sk_wrong"})
        assert response.status_code == 401
    with httpx.Client(
        base_url=server.url, timeout=30, cookies={LOGIN_COOKIE: "sk_wrong"}
    ) as wrong_cookie:
        assert wrong_cookie.post(url, json=body).status_code == 401
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        patch = {"pc_id": "pc-x", "candidates": [{"candidate": "", "sdpMid": "0"}]}
        assert anonymous.patch(url, json=patch).status_code == 401

    assert (
        api.post("/v1/agents/agt_missing/webrtc/offer", json=body).json()["code"]
        == "agent_not_found"
    )
    response = api.post(url, json={"sdp": "", "type": "offer"})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    response = api.post(url, json={"sdp": MINIMAL_OFFER, "type": "answer"})
    assert response.status_code == 422

    for sdp in (
        "this is not SDP",
        MINIMAL_OFFER,
        MINIMAL_OFFER + "m=audio x UDP/TLS/RTP/SAVPF 111\r\n",
    ):
        response = api.post(url, json={"sdp": sdp, "type": "offer"})
        assert response.status_code == 400 and response.json()["code"] == "invalid_offer", (
            response.text
        )
    failed = api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"]
    assert [(s["status"], s["connection_type"]) for s in failed] == [("failed", "webrtc")]

    response = api.patch(
        url, json={"pc_id": "pc-unknown", "candidates": [{"candidate": "", "sdpMid": "0"}]}
    )
    assert response.status_code == 404 and response.json()["code"] == "peer_connection_not_found"
    response = api.patch(url, json={"pc_id": "pc-unknown", "candidates": [{"candidate": ""}]})
    assert response.status_code == 422

    assert api.patch(f"/v1/agents/{agent['id']}", json={"status": "paused"}).status_code == 200
    response = api.post(url, json=body)
    assert response.status_code == 409 and response.json()["code"] == "agent_paused"


async def test_trickled_candidates_are_checked(server, api):
    agent = make_agent(api, pipeline="scripted", greeting="Hello.")
    caller = WebRTCCaller(server, agent["id"], server.headers)
    try:
        await caller.connect()
        url = f"/v1/agents/{agent['id']}/webrtc/offer"
        pc_id = caller.answer["pc_id"]
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.headers, timeout=30
        ) as http:
            bad = await http.patch(
                url,
                json={
                    "pc_id": pc_id,
                    "candidates": [{"candidate": "candidate:1 1", "sdpMid": "0"}],
                },
            )
            assert bad.status_code == 400 and bad.json()["code"] == "invalid_candidate", bad.text
            other = make_agent(api, pipeline="scripted")
            wrong_agent = await http.patch(
                f"/v1/agents/{other['id']}/webrtc/offer",
                json={"pc_id": pc_id, "candidates": [{"candidate": "", "sdpMid": "0"}]},
            )
            assert wrong_agent.status_code == 404
        await caller.wait_for("agent.speech.stopped", timeout=60)  # the call went on regardless
    finally:
        await caller.close()


async def test_deleting_the_agent_ends_its_browser_call(server, api):
    agent = make_agent(api, pipeline="scripted", greeting="Hello there, how can I help you today?")
    caller = WebRTCCaller(server, agent["id"], server.headers)
    try:
        await caller.connect()
        await caller.wait_for("agent.speech.started", timeout=60)
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.headers, timeout=30
        ) as http:
            assert (await http.delete(f"/v1/agents/{agent['id']}")).status_code == 200
        ended = await caller.wait_for("session.ended", timeout=15)
        assert ended["reason"] == "agent_deleted"
    finally:
        await caller.close()
    session = wait_for_status(api, caller.answer["session_id"], "completed", timeout=30)
    assert session["end_reason"] == "agent_deleted"


def test_ice_servers_reach_the_call_page(tmp_path, monkeypatch):
    ice_servers = [
        {"urls": ["turn:turn.example.org:3478"], "username": "switchboard", "credential": "s3cret"}
    ]
    monkeypatch.setenv("SWITCHBOARD_WEBRTC_ICE_SERVERS", json.dumps(ice_servers))
    settings = Settings(
        data_dir=tmp_path, api_key=ADMIN_KEY, preload_pipelines=[], pipelines_path=[TEST_PIPELINES]
    )
    with TestClient(create_app(settings)) as client:
        agent = client.post(
            "/v1/agents",
            headers={"X-API-Key": ADMIN_KEY},
            json={"name": "Ice", "voice_id": "joe", "system_prompt": "Hi.", "pipeline": "scripted"},
        ).json()
        assert (
            client.post("/login", data={"api_key": ADMIN_KEY}, follow_redirects=False).status_code
            == 303
        )
        page = client.get(f"/agents/{agent['id']}/preview").text
    attribute = re.search(r"data-ice-servers='([^']*)'", page).group(1)
    assert json.loads(html.unescape(attribute)) == ice_servers
