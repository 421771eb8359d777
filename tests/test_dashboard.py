"""The dashboard: log-in, refusals without it, escaping, and a real browser call in headless
Chromium (Debian's package) with its fake microphone playing Piper speech."""

import json
import re
import time
import wave
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from playwright.sync_api import expect, sync_playwright

from app.api import dashboard
from app.client import SessionClient
from app.deps import LOGIN_COOKIE
from tests.audio import speech
from tests.helpers.calls import agent_ws, wait_for_status
from tests.helpers.dashboard import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    logged_in,
    need_chromium,
    screenshot_dir,
)
from tests.helpers.servers import ADMIN_KEY, make_agent, start_server

PUBLIC_ROUTES = {"/login", "/logout"}


def dashboard_routes() -> list[tuple[str, str]]:
    routes = [
        r
        for r in dashboard.router.routes
        if isinstance(r, APIRoute) and r.path not in PUBLIC_ROUTES
    ]
    return [(method, route.path) for route in routes for method in route.methods]


def test_every_page_and_action_refuses_without_the_key(server, api):
    agent = make_agent(api, pipeline="scripted")
    session_id = api.post(f"/v1/agents/{agent['id']}/sessions").json()["session_id"]
    routes = dashboard_routes()
    assert len(routes) >= 11, routes
    offer = f"/v1/agents/{agent['id']}/webrtc/offer"

    for cookies in (
        {},
        {LOGIN_COOKIE: "sk_not_a_key"},
        {LOGIN_COOKIE: ""},
        {"switchboard_key": server.api_key},
    ):
        with httpx.Client(base_url=server.url, timeout=30, cookies=cookies) as anonymous:
            for method, path in routes:
                url = path.replace("{agent_id}", agent["id"]).replace("{session_id}", session_id)
                response = anonymous.request(
                    method, url, **({} if method == "GET" else {"data": {"name": "x"}})
                )
                if method == "GET":
                    assert response.status_code == 303, (method, url, response.status_code)
                    assert response.headers["location"].startswith("/login?next=")
                    assert agent["id"] not in response.text and session_id not in response.text
                else:
                    assert response.status_code == 401, (method, url, response.status_code)
                    assert response.json()["code"] == "unauthorized"
            assert anonymous.post(offer, json={"sdp": "v=0", "type": "offer"}).status_code == 401
            assert (
                anonymous.patch(
                    offer, json={"pc_id": "p", "candidates": [{"candidate": "", "sdpMid": "0"}]}
                ).status_code
                == 401
            )
    assert (
        api.get(f"/v1/agents/{agent['id']}").json()["status"] == "active"
    )  # nothing was paused or deleted

    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        page = anonymous.get("/login?next=//evil.example/")
        assert page.status_code == 200 and 'value="/"' in page.text  # no open redirect
        refused = anonymous.post("/login", data={"api_key": "sk_wrong"})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers

    with logged_in(server) as client:
        assert client.get("/").status_code == 200
        # A form posted from another site's page is refused even with the cookie.
        foreign = client.post(
            f"/agents/{agent['id']}/delete", headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert client.post("/logout").headers["location"] == "/login"
    assert api.get(f"/v1/agents/{agent['id']}").json()["status"] == "active"


async def test_caller_and_llm_text_is_escaped(server, api, llm):
    llm.script('<img src=x onerror="alert(2)"> We open at <b>nine</b>.')
    agent = make_agent(api, pipeline="scripted", name="<script>alert('name')</script>")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.send_event(
            {"type": "input.text", "text": "<script>alert('caller')</script> hours?"}
        )
        await client.wait_for("transcript.agent", timeout=60)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=15)
    wait_for_status(api, ready["session_id"], "completed")

    with logged_in(server) as client:
        pages = [
            client.get("/agents"),
            client.get("/calls"),
            client.get(f"/calls/{ready['session_id']}"),
            client.get(f"/agents/{agent['id']}"),
            client.get(f"/agents/{agent['id']}/preview"),
            client.get("/"),
            client.get("/live"),
        ]
        for page in pages:
            assert page.status_code == 200, page.text
            assert (
                "<script>alert" not in page.text
                and "<img src=x" not in page.text
                and "<b>nine" not in page.text
            )
            assert "default-src 'self'" in page.headers["content-security-policy"]
        session_page = pages[2].text
        assert "&lt;script&gt;alert(&#39;caller&#39;)&lt;/script&gt; hours?" in session_page
        assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in session_page
        assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in pages[0].text


def test_agent_forms(server, api):
    with logged_in(server) as client:
        form = {
            "name": "Front desk",
            "pipeline": "scripted",
            "voice_id": "joe",
            "language": "en",
            "max_turns": "12",
            "system_prompt": "You answer the phone.",
            "greeting": "Hello!",
            "tools": "",
        }
        bad = client.post("/agents/new", data={**form, "voice_id": "nobody"})
        assert bad.status_code == 422 and "voice &#39;nobody&#39; is not offered" in bad.text
        assert 'value="Front desk"' in bad.text  # the form keeps what was typed
        bad_tools = client.post("/agents/new", data={**form, "tools": "[{"})
        assert bad_tools.status_code == 422 and "tools: not valid JSON" in bad_tools.text

        created = client.post("/agents/new", data=form)
        assert created.status_code == 303
        agent_id = created.headers["location"].rsplit("/", 1)[1]
        agent = api.get(f"/v1/agents/{agent_id}").json()
        assert (agent["name"], agent["max_turns"], agent["greeting"], agent["pipeline"]) == (
            "Front desk",
            12,
            "Hello!",
            "scripted",
        )

        assert (
            agent["interruptible"] is False and agent["recording_enabled"] is False
        )  # unticked boxes
        edit_page = client.get(f"/agents/{agent_id}").text
        assert 'value="Front desk"' in edit_page and 'name="interruptible" >' in edit_page

        tool = '[{"name": "lookup", "description": "Find a booking", "parameters": {"type": "object", "properties": {}}}]'

        changes = {
            "name": "Front desk 2",
            "greeting": "",
            "tools": tool,
            "first_speaker": "user",
            "max_duration": "600",
            "interruptible": "on",
            "recording_enabled": "on",
        }
        assert client.post(f"/agents/{agent_id}", data={**form, **changes}).status_code == 303
        agent = api.get(f"/v1/agents/{agent_id}").json()
        assert (
            agent["name"] == "Front desk 2"
            and agent["greeting"] is None
            and agent["tools"][0]["name"] == "lookup"
        )
        assert (
            agent["first_speaker"],
            agent["max_duration"],
            agent["interruptible"],
            agent["recording_enabled"],
        ) == ("user", 600, True, True)
        assert 'name="interruptible" checked' in client.get(f"/agents/{agent_id}").text

        assert client.post(f"/agents/{agent_id}/pause").status_code == 303
        assert api.get(f"/v1/agents/{agent_id}").json()["status"] == "paused"
        assert client.post(f"/agents/{agent_id}/resume").status_code == 303
        assert api.get(f"/v1/agents/{agent_id}").json()["status"] == "active"
        assert client.post(f"/agents/{agent_id}/delete").status_code == 303
        assert api.get(f"/v1/agents/{agent_id}").json()["status"] == "deleted"
        assert agent_id not in client.get("/agents").text


def test_call_log_filters_and_pages(server, api):
    agent = make_agent(api, pipeline="scripted", name="Paged agent")
    other = make_agent(api, pipeline="scripted", name="Other agent")
    ids = [api.post(f"/v1/agents/{agent['id']}/sessions").json()["session_id"] for _ in range(23)]
    api.post(f"/v1/agents/{other['id']}/sessions")
    with logged_in(server) as client:
        first = client.get("/calls", params={"agent_id": agent["id"]}).text
        shown = re.findall(r'data-session-id="([^"]+)"', first)
        assert shown == ids[::-1][:20]
        assert "Page 1 of 2 · 23 calls" in first
        older = re.search(r'href="(/calls\?[^"]+page=2)"', first).group(1).replace("&amp;", "&")
        second = re.findall(r'data-session-id="([^"]+)"', client.get(older).text)
        assert second == ids[::-1][20:]
        created = client.get("/calls", params={"agent_id": agent["id"], "status": "completed"}).text
        assert "No calls match these filters" in created
        row = client.get("/calls", params={"agent_id": agent["id"], "status": "created"}).text
        assert (
            len(re.findall(r'data-session-id="', row)) == 20
            and "websocket" in row
            and "Paged agent" in row
        )

        for number in range(21):
            make_agent(api, pipeline="scripted", name=f"Agent {number}")
        total = api.get("/v1/agents", params={"limit": 1}).json()["total"]
        pages = [client.get("/agents", params={"page": page}).text for page in (1, 2)]
        assert f"Page 1 of {(total + 19) // 20} · {total} agents" in pages[0]
        assert [len(re.findall(r'data-agent-id="', page)) for page in pages] == [
            20,
            min(total - 20, 20),
        ]


# --- a real browser call ---------------------------------------------------------------


# Counts what the page's peer connections receive, for the assertions below.
RECORD_PEER_CONNECTIONS = """
window.__peerConnections = [];
const NativePeerConnection = window.RTCPeerConnection;
window.RTCPeerConnection = class extends NativePeerConnection {
  constructor(...args) { super(...args); window.__peerConnections.push(this); }
};
"""
RECEIVED_AUDIO = """
async () => {
  let energy = 0, packets = 0;
  for (const pc of window.__peerConnections) {
    (await pc.getStats()).forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") {
        energy += report.totalAudioEnergy || 0;
        packets += report.packetsReceived || 0;
      }
    });
  }
  return { energy, packets };
}
"""


ANALYSIS = {
    "summary": "The caller asked when the clinic opens tomorrow; the agent said nine in the morning.",
    "sentiment": "neutral",
    "topics": ["opening hours"],
    "action_items": [],
    "custom": {},
}


def wait_for_analysis(server, session_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as api:
        while api.get(f"/v1/sessions/{session_id}/analysis").json().get("status") != "completed":
            assert time.monotonic() < deadline, "no analysis"
            time.sleep(0.2)


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


@pytest.fixture
def fresh_server(llm, tmp_path):
    """A server of its own, so the screenshots show only the browser test's agent and call."""
    server = start_server(
        tmp_path / "server", preload=["scripted"], env={"SCRIPTED_LLM_URL": llm.url}
    )
    yield server
    server.stop()


def test_browser_call_from_the_dashboard(fresh_server, llm, tmp_path):
    server = fresh_server
    need_chromium()

    llm.script("We open at nine tomorrow morning.")
    llm.script_oneshot(json.dumps(ANALYSIS))  # the post-call analysis
    # The fake microphone loops the file: the question comes after the greeting, then a long silence.
    caller_wav = tmp_path / "caller.wav"
    write_wav(
        caller_wav,
        speech("What time do you open tomorrow morning?", 48000, lead_secs=8, tail_secs=30),
        48000,
    )
    shots = screenshot_dir(tmp_path)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={caller_wav}"],
        )
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 860}, base_url=server.url
            )
            context.add_init_script(RECORD_PEER_CONNECTIONS)
            page = context.new_page()
            page.set_default_timeout(30_000)

            page.goto("/")
            expect(page).to_have_url(re.compile(r"/login\?next=/$"))
            page.fill("#api_key", ADMIN_KEY)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Overview")

            page.click("nav >> text=Agents")
            page.click("text=New agent")
            page.fill("#name", "Clinic receptionist")
            page.select_option("#pipeline", "scripted")
            page.fill("#voice_id", "joe")
            page.fill(
                "#system_prompt",
                "You are the receptionist of a dental clinic. Answer in one short sentence.",
            )
            page.fill("#greeting", "Hello, thanks for calling the clinic.")
            page.click("text=Create agent")
            expect(page.locator("h1")).to_contain_text("Clinic receptionist")
            agent_id = page.url.rsplit("/", 1)[1]

            page.click("nav >> text=Agents")
            row = page.locator(f'tr[data-agent-id="{agent_id}"]')
            expect(row).to_contain_text("Clinic receptionist")
            page.screenshot(path=str(shots / "agents.png"))

            row.locator("text=Preview").click()
            expect(page).to_have_url(re.compile(f"/agents/{agent_id}/preview$"))
            page.click("#start")
            expect(page.locator("#status")).to_have_attribute(
                "data-state", "connected", timeout=30_000
            )
            greeting = page.locator("#transcript li.turn.agent").first
            expect(greeting).to_contain_text(
                "Hello, thanks for calling the clinic.", timeout=60_000
            )
            user_turn = page.locator("#transcript li.turn.user").first
            expect(user_turn).to_contain_text(re.compile("open", re.I), timeout=60_000)
            expect(user_turn).to_contain_text(re.compile("tomorrow", re.I))
            reply = page.locator("#transcript li.turn.agent").nth(1)
            expect(reply).to_contain_text("We open at nine tomorrow morning.", timeout=60_000)
            received = page.evaluate(RECEIVED_AUDIO)
            assert received["packets"] > 100 and received["energy"] > 0.01, received
            page.screenshot(path=str(shots / "live-call.png"))

            # The call is listed under Live calls, with what was said so far.
            live = context.new_page()
            live.goto("/live")
            live_row = live.locator("#live-calls tbody tr")
            expect(live_row).to_have_count(1)
            expect(live_row).to_contain_text("Clinic receptionist")
            expect(live_row).to_contain_text("We open at nine tomorrow morning.")
            expect(live_row.locator("button", has_text="Hang up")).to_be_visible()
            live.screenshot(path=str(shots / "live-calls.png"))
            live.close()

            page.click("#stop")
            expect(page.locator("#status")).to_contain_text("Call ended", timeout=15_000)
            session_id = page.locator("#call").get_attribute("data-session-id")
            wait_for_analysis(server, session_id)
            page.click("#session-link a")
            expect(page).to_have_url(re.compile(f"/calls/{session_id}$"))
            turns = page.locator("#transcript li.turn")
            expect(turns).to_have_count(3, timeout=15_000)
            expect(turns.nth(1)).to_contain_text(re.compile("tomorrow", re.I))
            expect(turns.nth(2)).to_contain_text("We open at nine tomorrow morning.")
            expect(page.locator("dl.meta").first).to_contain_text("caller_hangup")
            expect(page.locator("#analysis")).to_contain_text(ANALYSIS["summary"])
            expect(page.locator("#cost")).to_contain_text("USD")
            expect(page.locator("audio#recording")).to_have_attribute("src", re.compile("^blob:"))
            recording = page.request.get(f"/calls/{session_id}/recording")
            assert (
                recording.ok
                and recording.headers["content-type"] == "audio/wav"
                and len(recording.body()) > 48000
            )
            page.screenshot(path=str(shots / "session.png"), full_page=True)

            page.click("text=Call logs")
            call_row = page.locator(f'tr[data-session-id="{session_id}"]')
            expect(call_row).to_contain_text("webrtc")
            expect(call_row).to_contain_text("completed")
            expect(call_row).to_contain_text("Clinic receptionist")
        finally:
            browser.close()
