"""Evals (`switchboard eval`, app/evals/): Pipecat scenario files played against a real agent
through its front door — the session WebSocket (Piper speech or `input.text`) and a Twilio
Media Streams call — with the agent's words and tool calls from the scripted LLM, and the
judge and simulated caller on the scripted LLM too."""

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import pytest
from playwright.sync_api import expect, sync_playwright

from app.evals.judges import EvalLLM
from app.evals.runner import Target, run_scenario
from app.evals.scenarios import load
from tests.fakes.scripted_llm import ToolCall
from tests.helpers.dashboard import CHROMIUM, CHROMIUM_FLAGS, need_chromium
from tests.helpers.servers import ROOT, account_client, scripted_agent

GREETING = "Luigi's, hello."
BOOK_TABLE = {
    "name": "book_table",
    "type": "collect",
    "description": "Book a table",
    "parameters": {
        "type": "object",
        "properties": {"party_size": {"type": "integer"}, "time": {"type": "string"}},
        "required": ["party_size", "time"],
    },
}
BOOKING = """
name: booking
scenarios:
  - name: books_a_table
    turns:
      - expect:
          - event: response
            text_contains: "Luigi's"
      - user: "I would like a table for two at seven tonight."
        expect:
          - event: user_transcription
            text_contains: "a table for"
          - event: function_call
            calls:
              - name: book_table
                args: {party_size: 2}
          - event: response
            text_contains: booked
    switchboard:
      tools: [{name: book_table, args: {time: "7pm"}}]
      must_say: [booked]
      must_not_say: [sorry]
      end_reason: caller_hangup
      voice_to_voice_ms: 30000
"""
SIMULATED = """
name: simulated
scenarios:
  - name: caller_books
    persona: A busy parent who wants dinner out tonight.
    goal: Book a table for two at seven.
    success: The agent books a table for two at seven.
    max_turns: 3
"""


def booking_agent(api) -> dict:
    return scripted_agent(api, greeting=GREETING, tools=[BOOK_TABLE])


def suite(tmp_path: Path, text: str = BOOKING) -> Path:
    directory = tmp_path / "evals"
    directory.mkdir()
    (directory / "booking.yaml").write_text(text)
    return directory


def eval_cli(server, agent_id: str, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "eval", agent_id, str(path), "--server", server.url]
        + ["--api-key", server.api_key, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return load(path)


def check_junit(xml: str, tests: int, failures: int) -> list[ElementTree.Element]:
    """A structural check against the JUnit XML schema (testsuites > testsuite > testcase, the
    attributes it requires, counts that add up); returns the test cases."""
    root = ElementTree.fromstring(xml)
    assert root.tag == "testsuites"
    (testsuite,) = root
    assert testsuite.tag == "testsuite"
    for attribute in ("name", "tests", "failures", "errors", "time"):
        assert attribute in testsuite.attrib, attribute
    cases = list(testsuite)
    assert all(case.tag == "testcase" for case in cases)
    assert int(testsuite.get("tests")) == len(cases) == tests
    failed = [case for case in cases if case.find("failure") is not None]
    assert int(testsuite.get("failures")) == len(failed) == failures
    for case in cases:
        assert case.get("name") and case.get("classname")
        float(case.get("time"))
        for child in case:
            assert child.tag in ("failure", "system-out")
            if child.tag == "failure":
                assert child.get("message")
    return cases


def test_a_scripted_scenario_passes_over_the_websocket_with_speech(server, api, llm, tmp_path):
    """The CLI plays the scenario as Piper speech; Whisper on the server hears it, the agent
    books through its tool; exit 0, the table, JUnit XML and JSON."""
    agent = booking_agent(api)
    llm.script(ToolCall("book_table", {"party_size": 2, "time": "7pm"}), "Your table is booked.")
    junit, report = tmp_path / "junit.xml", tmp_path / "results.json"
    result = eval_cli(
        server, agent["id"], suite(tmp_path), "--junit", str(junit), "--json", str(report)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[1/1] booking/books_a_table  PASS" in result.stdout
    assert "1 passed, 0 failed" in result.stdout
    (case,) = check_junit(junit.read_text(), tests=1, failures=0)
    assert "AGENT: Your table is booked." in case.find("system-out").text
    (scenario,) = json.loads(report.read_text())["scenarios"]
    (run,) = scenario["runs"]
    assert scenario["passed"] and run["end_reason"] == "caller_hangup"
    greeting, booking = run["turns"]
    assert booking["user"] and "book" in booking["heard"].lower()
    assert 0 < booking["latency_ms"] < 30000 and run["p50_voice_to_voice_ms"]
    assert any(e["speaker"] == "TOOL" and "book_table" in e["content"] for e in run["transcript"])


def test_skipping_the_required_tool_fails_naming_the_tool_and_repeats_flag_flaky(
    server, api, llm, tmp_path
):
    """`--text --repeat 2`: the first time the agent says it booked without calling the tool
    (the reason names book_table), the second time it calls it; exit 1, the scenario flagged
    flaky at 1/2, a JUnit test case per run."""
    agent = booking_agent(api)
    llm.script("Your table is booked.")
    llm.script(ToolCall("book_table", {"party_size": 2, "time": "7pm"}), "Your table is booked.")
    junit, report = tmp_path / "junit.xml", tmp_path / "results.json"
    result = eval_cli(
        server,
        agent["id"],
        suite(tmp_path),
        *("--text", "--repeat", "2", "--junit", str(junit), "--json", str(report)),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "[1/2] booking/books_a_table  FAIL  turn 2: expected a call to book_table" in result.stdout
    )
    assert "[2/2] booking/books_a_table  PASS" in result.stdout
    assert "1/2 FLAKY" in result.stdout and "0 passed, 1 failed (1 flaky)" in result.stdout
    failed, passed = check_junit(junit.read_text(), tests=2, failures=1)
    message = failed.find("failure").get("message")
    assert "expected a call to book_table" in message and "no tool call" in message
    assert passed.get("name") == "booking/books_a_table (run 2)"
    (scenario,) = json.loads(report.read_text())["scenarios"]
    assert scenario["pass_rate"] == 0.5 and scenario["flaky"] and not scenario["passed"]


@pytest.mark.storage_free
def test_bad_scenarios_and_arguments_exit_2_and_no_server_fails(tmp_path):
    server = SimpleNamespace(url="http://127.0.0.1:9", api_key="sk_unused")
    result = eval_cli(server, "agt_x", suite(tmp_path), "--text")
    assert result.returncode == 1 and "the server did not answer" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nscenarios:\n  - name: x\n    turns: []\n    switchboard: {tools: 3}\n"
    )
    result = eval_cli(server, "agt_x", bad)
    assert result.returncode == 2 and "switchboard" in result.stderr
    result = eval_cli(server, "agt_x", bad, "--text", "--transport", "twilio")
    assert result.returncode == 2 and "--text" in result.stderr


async def test_scripted_scenario_over_twilio_passes_and_fails_without_the_tool(
    twilio_server, tw, llm, tmp_path
):
    """The same scenario over a Twilio Media Streams call (8 kHz μ-law speech, marks echoed)."""
    agent = booking_agent(tw)
    (scenario,) = load_text(tmp_path, BOOKING)
    target = Target(twilio_server.url, twilio_server.api_key, agent["id"], transport="twilio")
    llm.script(ToolCall("book_table", {"party_size": 2, "time": "7pm"}), "Your table is booked.")
    passed = await run_scenario(scenario, target)
    assert passed.passed, passed.failures
    # Whisper tiny hears Piper's "booked" as "booked" or "book."
    assert passed.turns[1].latency_ms and "book" in passed.turns[1].heard.lower()

    llm.script("Your table is booked.")
    failed = await run_scenario(scenario, target)
    assert not failed.passed
    assert "expected a call to book_table" in failed.reason


async def test_a_simulated_scenario_with_a_scripted_caller_and_judge(server, api, llm, tmp_path):
    """The simulated caller (Pipecat's persona on the scripted LLM) asks, the agent books, the
    caller hangs up through `end_call`; the judge reads the whole call and decides the goal."""
    agent = booking_agent(api)
    llm.script(ToolCall("book_table", {"party_size": 2, "time": "7pm"}), "Your table is booked.")
    llm.script_oneshot(
        "A table for two at seven tonight, please.",
        ToolCall("end_call", {"success": True, "reason": "booked"}),
        when="playing a person",
    )
    llm.script_oneshot('{"answer": {"probability": 0.95}}', when="Goal")
    (scenario,) = load_text(tmp_path, SIMULATED)
    scripted = EvalLLM(llm.url, "scripted")
    target = Target(server.url, server.api_key, agent["id"], text=True, llm=scripted)
    result = await run_scenario(scenario, target)
    assert result.passed, result.failures
    assert [t.user for t in result.turns] == [None, "A table for two at seven tonight, please."]
    judged = [r for r in llm.oneshot_requests if "Goal" in json.dumps(r["messages"])]
    assert len(judged) == 1 and "Your table is booked." in json.dumps(judged[0]["messages"])

    llm.script("We are fully booked tonight, sorry.")
    llm.script_oneshot(
        "A table for two at seven tonight, please.",
        ToolCall("end_call", {"success": False, "reason": "full"}),
        when="playing a person",
    )
    llm.script_oneshot('{"answer": {"probability": 0.05}}', when="Goal")
    failed = await run_scenario(scenario, target)
    assert not failed.passed and failed.reason.startswith("goal not met")


def wait_for_run(api, run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/v1/evals/{run_id}").json()
        if run["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return run
        time.sleep(0.3)


def test_the_api_runs_a_suite_in_the_background_for_its_account_only(server, api, llm):
    """POST /v1/agents/{id}/evals runs on the job queue; GET /v1/evals/{id} has the results, the
    transcript and the eval call's session and recording; another account sees none of it."""
    agent = booking_agent(api)
    llm.script(ToolCall("book_table", {"party_size": 2, "time": "7pm"}), "Your table is booked.")
    response = api.post(
        f"/v1/agents/{agent['id']}/evals", json={"scenarios": [BOOKING], "text": True}
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending" and response.json()["total"] == 1
    run = wait_for_run(api, response.json()["id"])
    assert run["status"] == "completed" and run["passed"] is True, run
    (result,) = run["results"]
    assert result["name"] == "booking/books_a_table" and result["passed"]
    assert result["recording_url"] == f"/v1/sessions/{result['session_id']}/recording"
    assert api.get(f"/v1/sessions/{result['session_id']}").json()["agent_id"] == agent["id"]
    assert any(e["speaker"] == "TOOL" for e in result["transcript"])
    listed = api.get(f"/v1/agents/{agent['id']}/evals").json()["items"]
    assert [r["id"] for r in listed][:1] == [run["id"]]

    with account_client(server, "Other tenant") as other:
        assert other.get(f"/v1/evals/{run['id']}").status_code == 404
        refused = other.post(f"/v1/agents/{agent['id']}/evals", json={"scenarios": [BOOKING]})
        assert refused.status_code == 404 and refused.json()["code"] == "agent_not_found"
        assert other.get(f"/v1/agents/{agent['id']}/evals").status_code == 404


def test_the_api_refuses_bad_scenarios_with_4xx(server, api):
    agent = booking_agent(api)
    url = f"/v1/agents/{agent['id']}/evals"
    include = "name: x\nscenarios: !include /etc/passwd\n"
    bodies = [
        {"scenarios": [include]},
        {"scenarios": ["name: [unclosed"]},
        {"scenarios": ["name: x\nscenarios:\n  - name: y\n"]},
        {"scenarios": []},
        {"scenarios": [BOOKING], "repeat": 0},
        {"scenarios": [BOOKING], "transport": "twilio", "text": True},
        {"scenarios": [SIMULATED]},  # needs the eval LLM, which this server has not
        {"scenarios": ["x" * 70_000]},
        {"scenarios": [BOOKING], "extra": 1},
    ]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(lambda body: api.post(url, json=body), bodies))
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] and response.json()["message"]
    assert responses[6].json()["code"] == "eval_llm_not_configured"
    assert responses[0].json()["code"] == "invalid_scenarios"
    assert "not plain YAML" in responses[0].json()["message"]
    assert api.get("/v1/evals/evl_missing").status_code == 404


def test_the_dashboard_runs_a_suite_and_shows_a_failure_beside_the_run_before(server, api, llm):
    """The agent's Evals tab: a run started there is watched until it ends; its failure shows
    the reason, the previous run's result, the transcript and the call's recording."""
    need_chromium()
    agent = booking_agent(api)
    llm.script(ToolCall("book_table", {"party_size": 2, "time": "7pm"}), "Your table is booked.")
    body = {"scenarios": [BOOKING], "text": True}
    first = api.post(f"/v1/agents/{agent['id']}/evals", json=body).json()
    assert wait_for_run(api, first["id"])["passed"] is True
    llm.script("Your table is booked.")  # the tool call skipped this time

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_context(base_url=server.url).new_page()
            page.set_default_timeout(30_000)
            page.goto("/login")
            page.fill("#api_key", server.api_key)
            page.click("button[type=submit]")
            page.goto(f"/agents/{agent['id']}")
            page.click("text=Evals")
            expect(page.locator("#scenarios")).to_have_value(
                BOOKING.lstrip()
            )  # the last run's file
            page.check("input[name=text]")
            page.click("#run-evals button[type=submit]")
            run = page.locator("#eval-run")
            expect(run).to_have_attribute("data-status", "completed", timeout=90_000)
            row = page.locator("#eval-results tbody tr")
            expect(row).to_contain_text("booking/books_a_table")
            expect(row.locator("td").nth(1)).to_have_text("FAIL")
            expect(row.locator("td").nth(2)).to_have_text("PASS")  # the run before
            expect(row.locator("td").nth(3)).to_contain_text("expected a call to book_table")
            failure = page.locator("section.failure")
            expect(failure.locator("li.turn.agent").last).to_contain_text("Your table is booked.")
            expect(failure.locator("audio")).to_have_attribute(
                "src", re.compile(r"^/calls/ses_\w+/recording$")
            )
            expect(page.locator("#eval-runs tbody tr")).to_have_count(2)
        finally:
            browser.close()


@pytest.mark.storage_free
def test_the_examples_suite_loads():
    scenarios = load(ROOT / "examples" / "evals")
    names = {s.name: s for s in scenarios}
    assert names["restaurant/books_a_table"].expect.flow_path == ["greeting", "reserve", "booked"]
    assert names["restaurant/caller_books_by_themselves"].simulated
    assert names["clinic/books_an_appointment"].needs_llm


GREETS = """
name: greeting
scenarios:
  - name: says_the_name
    turns:
      - expect:
          - event: response
            text_contains: "Luigi's"
"""


def test_a_stored_suite_runs_by_name(server, api, llm):
    """PUT /v1/agents/{id}/eval-suite stores scenario files; a run names scenarios from it."""
    agent = booking_agent(api)
    suite_url, runs_url = f"/v1/agents/{agent['id']}/eval-suite", f"/v1/agents/{agent['id']}/evals"
    assert api.get(suite_url).json()["code"] == "eval_suite_not_found"
    assert api.post(runs_url, json={"text": True}).json()["code"] == "eval_suite_not_found"
    stored = api.put(suite_url, json={"scenarios": [BOOKING, GREETS]})
    assert stored.status_code == 200, stored.text
    assert stored.json()["names"] == ["booking/books_a_table", "greeting/says_the_name"]
    assert api.get(suite_url).json()["scenarios"] == [BOOKING, GREETS]

    unknown = api.post(runs_url, json={"names": ["greeting/nope"]})
    assert unknown.status_code == 422 and "greeting/nope" in unknown.json()["message"]
    started = api.post(runs_url, json={"names": ["greeting/says_the_name"], "text": True})
    assert started.status_code == 202 and started.json()["total"] == 1
    run = wait_for_run(api, started.json()["id"])
    assert run["passed"] is True and [r["name"] for r in run["results"]] == [
        "greeting/says_the_name"
    ]
    with account_client(server, "Suite thief") as other:
        assert other.get(suite_url).status_code == 404
        assert other.put(suite_url, json={"scenarios": [GREETS]}).status_code == 404
    assert api.put(suite_url, json={"scenarios": ["name: x\n"]}).status_code == 422


LONG_REPLY = (
    "We are open every weekday. On Monday we open at eight in the morning and close at six in "
    "the evening. On Tuesday we open at nine and close at seven. On Wednesday we open at eight "
    "and close at five. On Thursday we open at nine and close at nine."
)
BARGE_IN = """
name: barge_in
scenarios:
  - name: caller_cuts_in
    turns:
      - user: "What are your opening hours?"
      - user: "Are you open on Sunday?"  # no comma: a pause inside the turn may split it
        send_after: {event: bot_started_speaking, delay_ms: 1500}
        expect:
          - event: response
            text_contains: closed on Sunday
    switchboard:
      must_not_say: [open at nine and close at nine]
"""


async def test_a_caller_barges_in_with_send_after(server, api, llm, tmp_path):
    """`send_after: {event: bot_started_speaking}`: the caller speaks over the agent's long
    reply; the agent stops (its reply stored as interrupted) and answers the new question."""
    agent = booking_agent(api)
    llm.script(LONG_REPLY, "No, we are closed on Sunday.")
    (scenario,) = load_text(tmp_path, BARGE_IN)
    result = await run_scenario(scenario, Target(server.url, server.api_key, agent["id"]))
    assert result.passed, (result.failures, result.transcript)
    cut = [e for e in result.transcript if e["speaker"] == "AGENT" and e["interrupted"]]
    assert len(cut) == 1 and LONG_REPLY.startswith(cut[0]["content"].rstrip(".… "))
    assert "closed on sunday" in result.turns[-1].heard.lower()
