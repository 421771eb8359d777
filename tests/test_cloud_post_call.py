"""After a call: post-call analysis (scripted LLM) and signed, retried webhooks."""

import asyncio
import json
import time

import httpx

from app.client import SessionClient
from tests.fakes.scripted_llm import HOLD
from tests.helpers.calls import agent_ws, wait_for_status
from tests.helpers.post_call import (
    ANALYSIS,
    ANALYSIS_FIELDS,
    analysis_requests,
    talk,
    verify,
    wait_for_analysis,
)
from tests.helpers.servers import make_agent


async def test_analysis_stored_with_all_fields(server, api, llm):
    llm.script(
        "Monday at nine works. What number can we call you back on?", "Thanks, we'll call you back."
    )
    llm.script_oneshot(json.dumps(ANALYSIS), when="cleaning for two people")
    agent = make_agent(api, pipeline="scripted", analysis_fields=ANALYSIS_FIELDS)
    assert agent["analysis_fields"][1]["options"] == ["low", "medium", "high"]
    session_id = await talk(
        server, agent, "I'd like a cleaning for two people on Monday.", "It's 555 0100."
    )

    analysis = wait_for_analysis(api, session_id)
    assert (
        analysis["status"] == "completed"
        and analysis["attempts"] == 1
        and analysis["error"] is None
    )
    assert analysis["result"] == ANALYSIS
    request = next(
        r for r in reversed(llm.oneshot_requests) if "555 0100" in json.dumps(r["messages"])
    )
    prompt = json.dumps(request["messages"])
    assert "cleaning for two people on Monday" in prompt and "555 0100" in prompt
    schema = request["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]["custom"]["required"]) == {f["name"] for f in ANALYSIS_FIELDS}
    assert schema["properties"]["sentiment"]["enum"] == ["positive", "neutral", "negative"]


async def test_invalid_analysis_is_retried_once_then_stored_as_failed(server, api, llm):
    bad_sentiment = {**ANALYSIS, "sentiment": "ecstatic", "custom": {}}
    llm.script("We open at nine.")
    llm.script_oneshot(
        "Sure, here you go: not json at all",
        json.dumps(bad_sentiment),
        when="When do you open on Tuesdays?",
    )
    agent = make_agent(api, pipeline="scripted")
    session_id = await talk(server, agent, "When do you open on Tuesdays?")

    analysis = wait_for_analysis(api, session_id)
    assert (
        analysis["status"] == "failed" and analysis["result"] is None and analysis["attempts"] == 2
    )
    assert "sentiment" in analysis["error"]
    assert len(analysis_requests(llm, "Tuesdays")) == 2

    # Run again: this time the LLM answers properly.
    llm.script_oneshot(json.dumps({**ANALYSIS, "custom": {}}), when="When do you open on Tuesdays?")
    response = api.post(f"/v1/sessions/{session_id}/analysis")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    analysis = wait_for_analysis(api, session_id)
    assert analysis["status"] == "completed" and analysis["result"]["sentiment"] == "positive"


async def test_one_analysis_at_a_time_per_session(server, api, llm):
    llm.script("We open at ten on Fridays.")
    agent = make_agent(api, pipeline="scripted")
    session_id = await talk(server, agent, "When do you open on Fridays?")
    wait_for_analysis(api, session_id)
    analysed_before = len(analysis_requests(llm, "open on Fridays"))

    llm.script_oneshot(HOLD, when="open on Fridays")  # the rerun's LLM call hangs until released
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as client:
        burst = await asyncio.gather(
            *(client.post(f"/v1/sessions/{session_id}/analysis") for _ in range(12))
        )
    assert sorted(r.status_code for r in burst) == [202] + [409] * 11
    for refused in (r for r in burst if r.status_code == 409):
        assert refused.json()["code"] == "analysis_in_progress" and refused.json()["message"]
    assert api.get(f"/v1/sessions/{session_id}/analysis").json()["status"] == "pending"
    deadline = time.monotonic() + 10
    while len(analysis_requests(llm, "open on Fridays")) == analysed_before:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert api.post(f"/v1/sessions/{session_id}/analysis").status_code == 409  # still running

    llm.release()  # the held call answers (not JSON): the analysis fails, and may run again
    assert wait_for_analysis(api, session_id)["status"] == "failed"
    llm.script_oneshot(json.dumps({**ANALYSIS, "custom": {}}), when="open on Fridays")
    assert api.post(f"/v1/sessions/{session_id}/analysis").status_code == 202
    assert wait_for_analysis(api, session_id)["status"] == "completed"
    conflict = api.get("/openapi.json").json()["paths"]["/v1/sessions/{session_id}/analysis"][
        "post"
    ]["responses"]["409"]
    assert "analysis_in_progress" in conflict["description"]


def test_analysis_api_errors(server, api):
    assert api.get("/v1/sessions/ses_nope/analysis").status_code == 404
    agent = make_agent(api, pipeline="scripted")
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    response = api.get(f"/v1/sessions/{session['session_id']}/analysis")
    assert response.status_code == 404 and response.json()["code"] == "analysis_not_found"
    response = api.post(f"/v1/sessions/{session['session_id']}/analysis")
    assert response.status_code == 409 and response.json()["code"] == "session_not_ended"
    bad = api.post(
        "/v1/agents",
        json={
            "name": "x",
            "voice_id": "joe",
            "system_prompt": "x",
            "pipeline": "scripted",
            "analysis_fields": [{"name": "mood", "type": "enum", "description": "Mood"}],
        },
    )
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    bad = api.post(
        "/v1/agents",
        json={
            "name": "x",
            "voice_id": "joe",
            "system_prompt": "x",
            "pipeline": "scripted",
            "webhook_url": "ftp://x",
        },
    )
    assert bad.status_code == 422


async def test_webhooks_are_signed_and_retried(server, api, llm, webhook_receiver):
    secret = "whsec_test_secret_0123456789"
    webhook_receiver.fail_next("/events", 500, 500)
    llm.script("We open at nine on Wednesdays.")
    llm.script_oneshot(json.dumps({**ANALYSIS, "custom": {}}), when="open on Wednesdays")
    agent = make_agent(
        api,
        pipeline="scripted",
        webhook_url=webhook_receiver.url("/events"),
        webhook_secret=secret,
        webhook_events=[
            "session.started",
            "transcript.updated",
            "session.ended",
            "analysis.completed",
        ],
    )
    session_id = await talk(server, agent, "When do you open on Wednesdays?")

    # Each delivery is marked delivered only after its receiver answered: wait for both sides.
    kinds = {"session.started", "transcript.updated", "session.ended", "analysis.completed"}
    deadline = time.monotonic() + 60
    while True:
        delivered = [
            r
            for r in webhook_receiver.events("/events")
            if json.loads(r["body"])["session_id"] == session_id
        ]
        deliveries = api.get(f"/v1/agents/{agent['id']}/webhook-deliveries").json()
        settled = {d["status"] for d in deliveries["items"]} == {"delivered"}
        events = {json.loads(r["body"])["event"] for r in delivered}
        if events == kinds and settled and deliveries["total"] == len(delivered):
            break
        assert time.monotonic() < deadline, (events, deliveries)
        await asyncio.sleep(0.2)
    by_event = {}
    for request in delivered:
        assert verify(secret, request)
        assert not verify("whsec_some_other_secret_000", request)
        body = json.loads(request["body"])
        assert request["headers"]["X-Switchboard-Event"] == body["event"]
        by_event.setdefault(body["event"], []).append(body)
    ended = by_event["session.ended"][0]["data"]
    assert (
        ended["end_reason"] == "caller_hangup"
        and ended["duration_secs"] > 0
        and "total" in ended["cost"]
    )
    turns = [(e["data"]["speaker"], e["data"]["content"]) for e in by_event["transcript.updated"]]
    assert ("USER", "When do you open on Wednesdays?") in turns and (
        "AGENT",
        "We open at nine on Wednesdays.",
    ) in turns
    assert by_event["analysis.completed"][0]["data"]["analysis"]["sentiment"] == "positive"

    retried = [d for d in deliveries["items"] if d["attempts"] > 1]
    assert len(retried) >= 1 and sum(d["attempts"] - 1 for d in retried) == 2  # the two 500s
    assert all(d["last_status_code"] == 200 for d in deliveries["items"])
    assert api.get("/v1/agents/agt_nope/webhook-deliveries").status_code == 404


async def test_a_hanging_receiver_does_not_delay_the_end_of_the_call(
    server, api, llm, webhook_receiver
):
    llm.script("We open at nine.")
    agent = make_agent(api, pipeline="scripted", webhook_url=webhook_receiver.url("/hang"))
    assert (
        agent["webhook_secret"].startswith("whsec_") and agent["webhook_events"] is None
    )  # generated; defaults
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "When do you open?"})
        await client.wait_for("transcript.agent", timeout=30)
        ending = time.monotonic()
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    wait_for_status(api, ready["session_id"], "completed", timeout=5)
    assert time.monotonic() - ending < 5
    deliveries = api.get(f"/v1/agents/{agent['id']}/webhook-deliveries").json()["items"]
    assert deliveries and all(d["status"] == "pending" for d in deliveries)
    hung = [
        json.loads(r["body"])["event"]
        for r in webhook_receiver.events("/hang", status=None)
        if json.loads(r["body"])["session_id"] == ready["session_id"]
    ]
    assert hung and "transcript.updated" not in hung  # not asked for
