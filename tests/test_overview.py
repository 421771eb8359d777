"""The dashboard's overview, session charts and live calls, from real calls made here: Chromium
draws the overview's charts and the session's latency waterfall and waveform from the JSON API,
the errors list links to the failed call and webhook, and an operator hangs up a live call
(never another account's)."""

import asyncio
import json
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from app.client import SessionClient
from tests.audio import speech
from tests.helpers.calls import agent_ws, wait_for_cost, wait_for_status
from tests.helpers.dashboard import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    logged_in,
    need_chromium,
    screenshot_dir,
)
from tests.helpers.post_call import talk
from tests.helpers.servers import ADMIN_KEY, account_client, free_port, scripted_agent
from tests.helpers.storage import query_database

LONG_ANSWER = (
    "Let me tell you everything about our opening hours. On Monday we open at eight in the morning "
    "and close at six in the evening. On Tuesday we open at nine and close at seven. On Wednesday "
    "we open at eight and close at five. On Thursday we open late, at ten, and close at eight."
)


async def call_with_a_barge_in(server, agent: dict) -> str:
    """A spoken question answered, then a long answer the caller talks over; the session id."""
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.stream(speech("How is the weather today?"))
        await client.stream_silence(1.0)
        await client.wait_for("agent.speech.stopped", timeout=60, count=2)
        await client.send_event({"type": "input.text", "text": "What are your hours?"})
        await client.wait_for("agent.speech.started", timeout=30, count=3)
        await asyncio.sleep(1.5)  # the agent is mid-sentence
        await client.stream(speech("Wait, stop, I have a question.", tail_secs=1.0))
        await client.wait_for("agent.speech.stopped", timeout=10, count=3)
        await client.wait_for("agent.speech.stopped", timeout=60, count=4)
        # One more plain spoken turn: whether the barge-in's own reply is measured as a turn
        # depends on timing, the timeline needs two.
        await client.stream(speech("And is there parking nearby?"))
        await client.stream_silence(1.0)
        await client.wait_for("agent.speech.stopped", timeout=60, count=5)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    return ready["session_id"]


async def dropped_call(server, agent: dict) -> str:
    """A call whose client goes away without hanging up: it fails once the resume grace is over."""
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
    return ready["session_id"]


def wait_for_failed_webhook(server, session_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    query = f"SELECT status FROM webhook_deliveries WHERE session_id = '{session_id}'"
    while "failed" not in [status for (status,) in query_database(server, query)]:
        assert time.monotonic() < deadline, "the webhook delivery did not fail"
        time.sleep(0.2)


@pytest.fixture(scope="module")
async def calls(priced_server, scripted_llm):
    """The default account's calls: one with measured turns and a barge-in, a typed one, one
    dropped (failed) and one whose webhook fails."""
    scripted_llm.reset()
    scripted_llm.script("It is sunny today.", LONG_ANSWER, "Sure, go ahead.")
    analysis = {
        "summary": "The caller asked about the weather, then cut the list of opening hours short.",
        "sentiment": "neutral",
        "topics": ["weather", "opening hours"],
        "action_items": [],
        "custom": {},
    }
    scripted_llm.script_oneshot(json.dumps(analysis), when="sunny")
    with priced_server.client() as api:
        front = scripted_agent(api, name="Front desk", greeting="Hello there.")
        bookings = scripted_agent(api, name="Bookings", greeting="Bookings, hello.")
        hooked = scripted_agent(
            api,
            name="Hooked",
            webhook_url=f"http://127.0.0.1:{free_port()}/closed",
        )
        barge_in = await call_with_a_barge_in(priced_server, front)
        typed = await talk(priced_server, bookings, "When do you open?")
        dropped = await dropped_call(priced_server, bookings)
        webhook = await talk(priced_server, hooked, "Hello?")
        for session_id in (barge_in, typed, webhook):
            wait_for_cost(api, session_id)
        wait_for_status(api, dropped, "failed")
        wait_for_failed_webhook(priced_server, webhook)
        return {
            "agents": {"front": front, "bookings": bookings, "hooked": hooked},
            "barge_in": barge_in,
            "typed": typed,
            "dropped": dropped,
            "webhook": webhook,
            "latency": api.get(f"/v1/sessions/{barge_in}").json()["latency"],
        }


# Each chart of the page: its datasets' sizes, and how many of its canvas' pixels are painted.
CHARTS_DRAWN = """
() => Object.fromEntries(Object.entries(window.switchboardCharts).map(([id, chart]) => {
  const canvas = chart.canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return [id, {
    labels: chart.data.labels.length,
    points: chart.data.datasets.map((d) => d.data.filter((v) => v !== null && v !== 0).length),
    datasets: chart.data.datasets.map((d) => d.label),
    painted,
  }];
}))
"""


def test_browser_draws_the_overview_and_session_charts(priced_server, calls, tmp_path):
    need_chromium()
    shots = screenshot_dir(tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900}, base_url=priced_server.url
            )
            page = context.new_page()
            page.set_default_timeout(30_000)
            violations = []
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto("/login")
            page.fill("#api_key", ADMIN_KEY)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Overview")  # the landing page

            expect(page.locator("#overview")).to_have_attribute("data-state", "drawn")
            charts = page.evaluate(CHARTS_DRAWN)
            assert set(charts) == {
                "calls-chart",
                "end-reasons-chart",
                "latency-chart",
                "cost-agent-chart",
                "cost-stage-chart",
            }
            assert all(chart["painted"] > 500 for chart in charts.values()), charts
            assert charts["calls-chart"]["points"] == [1, 1]  # one day: 4 calls, 1 failed
            assert charts["latency-chart"]["points"][0] == 1  # a p50 for the day
            assert {"Front desk", "Bookings", "Hooked"} == set(
                charts["cost-agent-chart"]["datasets"]
            )
            assert "llm" in charts["cost-stage-chart"]["datasets"]
            expect(page.locator("#stat-calls")).to_have_text("4")
            expect(page.locator("#stat-failed")).to_have_text("1")

            failed_call = page.locator(f'tr[data-failed-call="{calls["dropped"]}"]')
            expect(failed_call).to_contain_text("disconnected")
            webhook = page.locator("tr[data-failed-webhook]", has_text="session.ended")
            expect(webhook.locator(f'a[href="/calls/{calls["webhook"]}"]')).to_have_count(1)
            page.screenshot(path=str(shots / "overview.png"), full_page=True)

            # By hour, for one agent: the charts follow the filters.
            page.select_option("#agent_id", calls["agents"]["front"]["id"])
            page.select_option("#bucket", "hour")
            page.click("#overview-filters button[type=submit]")
            expect(page.locator("#overview")).to_have_attribute("data-state", "drawn")
            expect(page.locator("#stat-calls")).to_have_text("1")
            assert page.evaluate(CHARTS_DRAWN)["calls-chart"]["labels"] >= 24 * 7

            failed_call_link = f"/calls/{calls['dropped']}"
            page.goto("/")
            page.click(f'a[href="{failed_call_link}"]')
            expect(page.locator("h1")).to_contain_text(calls["dropped"])

            page.goto(f"/calls/{calls['barge_in']}")
            expect(page.locator("#latency")).to_have_attribute("data-state", "drawn")
            drawn = page.evaluate(CHARTS_DRAWN)
            turns = len(calls["latency"]["turns"])
            barge_ins = len(calls["latency"]["interruptions"])
            assert turns >= 2 and barge_ins >= 1, calls["latency"]
            waterfall, timeline = drawn["waterfall-chart"], drawn["timeline-chart"]
            assert waterfall["labels"] == turns and waterfall["painted"] > 500
            parts = dict(zip(waterfall["datasets"], waterfall["points"], strict=True))
            assert parts["Voice-to-voice"] == turns
            assert parts["Transcription"] >= 1 and parts["LLM first token"] == turns
            assert timeline["labels"] == turns + barge_ins and timeline["painted"] > 500
            on_timeline = dict(zip(timeline["datasets"], timeline["points"], strict=True))
            assert on_timeline["Barge-in until the agent stopped"] == barge_ins
            labels = page.evaluate("window.switchboardCharts['timeline-chart'].data.labels")
            assert labels[0].startswith("Turn 1") and any(
                label.startswith("Barge-in") for label in labels
            )

            expect(page.locator("#waveform")).to_have_attribute("data-state", "drawn")
            assert float(page.locator("#waveform").get_attribute("data-duration")) > 3
            painted = page.evaluate(
                """() => { const c = document.getElementById("waveform-canvas");
                const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
            )
            assert painted > 1000
            reply = page.locator("#transcript .turn.agent").nth(1)
            offset = float(reply.get_attribute("data-offset"))
            reply.click()
            position = page.evaluate("document.getElementById('recording').currentTime")
            assert abs(position - offset) < 1.0, (position, offset)
            page.screenshot(path=str(shots / "session-latency.png"), full_page=True)

            page.goto(f"/calls/{calls['typed']}")  # no spoken turns: nothing to chart
            expect(page.locator("#latency")).to_have_attribute("data-state", "drawn")
            expect(page.locator("#latency")).to_contain_text("No turns were measured on this call.")
            assert violations == []
        finally:
            browser.close()


async def test_operator_hangs_up_a_live_call(priced_server, calls):
    owner, stranger = (account_client(priced_server, name) for name in ("owner", "stranger"))
    agent = scripted_agent(owner, name="Long talker", greeting="Hello, I am listening.")
    key = owner.headers["X-API-Key"]
    async with SessionClient(agent_ws(priced_server, agent["id"], key)) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        session_id = ready["session_id"]
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.send_event({"type": "input.text", "text": "Hi there."})
        await client.wait_for("transcript.agent", timeout=30, count=2)

        with logged_in(priced_server, stranger.headers["X-API-Key"]) as intruder:
            assert session_id not in intruder.get("/live").text
            # Nor does another account's overview list the default account's failures.
            failures = intruder.get("/").text
            assert calls["dropped"] not in failures and calls["webhook"] not in failures
            assert "No failed calls or webhooks in this period." in failures
            refused = intruder.post(f"/live/{session_id}/hangup")
            assert refused.status_code == 404 and refused.json()["code"] == "session_not_found"
            overview = intruder.get("/", params={"agent_id": agent["id"]})
            assert (
                "Choose one of your agents." in overview.text and "Long talker" not in overview.text
            )

        node = query_database(
            priced_server, f"SELECT host FROM sessions WHERE id = '{session_id}'"
        )[0][0]
        with logged_in(priced_server, key) as operator:
            live = operator.get("/live")
            assert live.status_code == 200
            row = live.text.split(f'data-session-id="{session_id}"')[1].split("</tr>")[0]
            assert "Long talker" in row and node in row and "Hi there." in row
            assert 'http-equiv="refresh"' in live.text
            assert operator.get("/").text.count('id="live-now"') == 1
            hung_up = operator.post(f"/live/{session_id}/hangup")
            assert hung_up.status_code == 303 and hung_up.headers["location"] == "/live"
            ended = await client.wait_for("session.ended", timeout=10)
            assert ended["reason"] == "hung_up"
            session = wait_for_status(owner, session_id, "completed")
            assert session["end_reason"] == "hung_up"
            assert "No calls in progress" in operator.get("/live").text
            # Hanging up a call that is over already does nothing.
            assert operator.post(f"/live/{session_id}/hangup").status_code == 303
            bad_dates = operator.get("/", params={"from": "yesterday"})
            assert (
                bad_dates.status_code == 200 and "Dates are written YYYY-MM-DD." in bad_dates.text
            )
    owner.close()
    stranger.close()
