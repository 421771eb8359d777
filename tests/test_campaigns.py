"""Campaigns (issue 17): an agent calls a list of contacts through Twilio's REST API (the local
fake), paced, under its concurrency cap, with retries; exactly once per attempt, even when a
node is killed mid-campaign. The test plays Twilio's side: status callbacks, and for one call
the media stream."""

import asyncio
import csv
import io
import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from app import campaigns
from app.jobs import JobQueue
from app.settings import Settings
from app.storage.ids import new_id
from app.storage.models import DEFAULT_ACCOUNT_ID, Campaign, CampaignContact
from tests.audio import speech
from tests.fakes.twilio_client import TwilioMediaStreamsClient
from tests.helpers.calls import wait_for_status
from tests.helpers.servers import account_client, scripted_agent, start_server
from tests.helpers.storage import add_agent, cluster_storage_env
from tests.helpers.twilio import ACCOUNT_SID, CallPlayer, signed_post, twilio_env

ALWAYS_OPEN = {"start": "00:00", "end": "23:59"}


def numbers(count: int) -> list[str]:
    return [f"+1415555{index:04d}" for index in range(1, count + 1)]


def campaign_body(agent: dict, contacts: list[dict], **fields) -> dict:
    """Calls from the agent's own number, 120 a minute, 3 at once."""
    return {
        "agent_id": agent["id"],
        "from": agent["phone_numbers"][0],
        "contacts": contacts,
        "calls_per_minute": 120,
        "max_concurrent": 3,
        **fields,
    }


async def wait_for_campaign(api, campaign_id: str, status: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (campaign := api.get(f"/v1/campaigns/{campaign_id}").json())["status"] != status:
        assert time.monotonic() < deadline, f"campaign never {status}: {campaign}"
        await asyncio.sleep(0.2)
    return campaign


async def test_a_20_contact_campaign_is_paced_capped_and_retries_no_answers(
    twilio_server, tw, twilio_rest
):
    agent = scripted_agent(tw, greeting="Hi {{name}}.", phone_numbers=["+15550007801"])
    contacts = [{"phone": n, "name": f"Person {i}"} for i, n in enumerate(numbers(20), start=1)]
    never, later = contacts[6]["phone"], {contacts[4]["phone"], contacts[11]["phone"]}

    def outcome(number: str, attempt: int) -> str:
        if number == never or (number in later and attempt == 1):
            return "no-answer"
        return "completed"

    already = len(twilio_rest.created_calls())
    async with CallPlayer(twilio_server, twilio_rest, outcome, hold=1.2) as player:
        created = tw.post(
            "/v1/campaigns",
            json=campaign_body(
                agent, contacts, max_attempts=2, retry_after_minutes=0.01, window=ALWAYS_OPEN
            ),
        )
        assert created.status_code == 201, created.text
        campaign = created.json()
        assert campaign["status"] == "running" and campaign["total"] == 20
        done = await wait_for_campaign(tw, campaign["id"], "completed")
    placed = twilio_rest.created_calls()[already:]

    # Exactly the attempts asked for: once each, twice for the two that answered the retry and
    # for the one that never answered; from the campaign's number, to the task's callbacks.
    dialled = Counter(r.value("To") for r in placed)
    assert dialled == {c["phone"]: 2 if c["phone"] in {never, *later} else 1 for c in contacts}
    assert {r.value("From") for r in placed} == set(agent["phone_numbers"])
    # Paced at 120 calls a minute (one every 0.5 s), never more than 3 under way at once.
    times = [r.at for r in placed]
    assert times[-1] - times[0] >= (len(times) - 1) * 0.5 * 0.9
    assert player.most_at_once() == 3

    assert done["counts"] == {"completed": 19, "no_answer": 1} and done["progress"] == 1.0
    unanswered = tw.get(
        f"/v1/campaigns/{campaign['id']}/contacts", params={"status": "no_answer"}
    ).json()
    assert unanswered["total"] == 1
    contact = unanswered["items"][0]
    assert (contact["phone"], contact["attempts"], contact["last_outcome"]) == (
        never,
        2,
        "no_answer",
    )
    assert len(contact["session_ids"]) == 2
    for session_id in contact["session_ids"]:
        session = wait_for_status(tw, session_id, "failed")
        assert session["end_reason"] == "no_answer"

    export = tw.get(f"/v1/campaigns/{campaign['id']}/export.csv")
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["phone"] for r in rows] == [c["phone"] for c in contacts]
    assert rows[6]["status"] == "no_answer" and rows[6]["attempts"] == "2"
    assert rows[4]["status"] == "completed" and rows[4]["attempts"] == "2"
    assert rows[0]["name"] == "Person 1"


async def test_a_csv_campaign_s_answered_call_greets_with_the_row_s_variables(
    twilio_server, tw, twilio_rest
):
    agent = scripted_agent(
        tw, greeting="Hi {{name}}, about {{topic}}.", phone_numbers=["+15550007802"]
    )
    upload = "phone,name,topic,timezone\n+14155550199,Ada,your order,Europe/London\n"
    greeted: list[str] = []

    async def answer(server, request) -> None:
        path = request.value("Url").removeprefix(server.url)
        twiml = await asyncio.to_thread(
            signed_post, server, path, {"AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
        )
        assert twiml.status_code == 200, twiml.text
        async with TwilioMediaStreamsClient.from_twiml(twiml.text) as client:
            await client.wait_marks(1, timeout=60)  # the greeting was spoken
            await client.stop()
            await client.wait_closed(timeout=10)
        greeted.append(path)

    async with CallPlayer(twilio_server, twilio_rest, lambda *_: "completed", 0.1, answer):
        fields = {k: v for k, v in campaign_body(agent, []).items() if k != "contacts"}
        created = tw.post(
            "/v1/campaigns",
            files={"contacts": ("contacts.csv", upload, "text/csv")},
            data={"campaign": json.dumps(fields)},
        )
        assert created.status_code == 201, created.text
        campaign = await wait_for_campaign(tw, created.json()["id"], "completed")
    assert campaign["counts"] == {"completed": 1} and greeted
    contact = tw.get(f"/v1/campaigns/{campaign['id']}/contacts").json()["items"][0]
    assert contact["timezone"] == "Europe/London"
    assert contact["variables"] == {"name": "Ada", "topic": "your order"}
    transcript = tw.get(f"/v1/sessions/{contact['session_ids'][0]}/transcript").json()["items"]
    assert transcript[0] == {**transcript[0], "speaker": "AGENT"}
    assert transcript[0]["content"] == "Hi Ada, about your order."


def refusal(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text
    return response.json()


def test_invalid_campaigns_are_refused_naming_rows_and_fields(tw, twilio_rest):
    agent = scripted_agent(tw, greeting="Hi {{name}}.", phone_numbers=["+15550007803"])
    already = len(twilio_rest.created_calls())
    bad = [
        {"phone": "+14155550100", "name": "Ok"},
        {"phone": "12345", "name": "No plus"},
        {"phone": "+442071838750", "name": "Abroad"},
        {"phone": "+14155550101"},
        {"phone": "+14155550102", "name": "Zone", "timezone": "Mars/Olympus"},
        {"phone": "+1 415 555 0100", "name": "Again"},
    ]
    body = refusal(
        tw.post("/v1/campaigns", json=campaign_body(agent, bad)), 422, "invalid_contacts"
    )
    assert [(e["row"], e["field"]) for e in body["details"]] == [
        (2, "phone"),
        (3, "phone"),
        (4, "name"),
        (5, "timezone"),
        (6, "phone"),
    ]
    assert "row 3 phone: +442071838750 is in GB" in body["message"]
    assert "row 6 phone: +14155550100 is already row 1" in body["message"]

    ok = [{"phone": "+14155550100", "name": "Ok"}]
    refusal(tw.post("/v1/campaigns", json=campaign_body(agent, [])), 422, "invalid_contacts")
    too_many = [{"phone": "+14155550100", "name": "x"}] * 10_001
    refusal(
        tw.post("/v1/campaigns", json=campaign_body(agent, too_many)),
        422,
        "too_many_contacts",
    )
    never = {"start": "09:00", "end": "09:00"}
    message = refusal(
        tw.post("/v1/campaigns", json=campaign_body(agent, ok, window=never)),
        422,
        "validation_error",
    )["message"]
    assert "window" in message and "never opens" in message
    no_days = {"start": "09:00", "end": "17:00", "days": []}
    refusal(
        tw.post("/v1/campaigns", json=campaign_body(agent, ok, window=no_days)),
        422,
        "validation_error",
    )
    over_cap = refusal(
        tw.post("/v1/campaigns", json=campaign_body(agent, ok, max_concurrent=21)),
        422,
        "validation_error",
    )
    assert over_cap["message"].startswith("max_concurrent: 21 is over the account's cap of 20")
    refusal(
        tw.post("/v1/campaigns", json=campaign_body(agent, ok, calls_per_minute=0)),
        422,
        "validation_error",
    )
    fields = json.dumps({k: v for k, v in campaign_body(agent, []).items() if k != "contacts"})
    no_phone = tw.post(
        "/v1/campaigns",
        files={"contacts": ("c.csv", "number,name\n+14155550100,Ok\n", "text/csv")},
        data={"campaign": fields},
    )
    assert "phone" in refusal(no_phone, 422, "invalid_contacts")["message"]
    refusal(
        tw.post("/v1/campaigns", content=b"phone\n", headers={"content-type": "text/csv"}),
        415,
        "unsupported_media_type",
    )
    refusal(tw.get("/v1/campaigns/cmp_missing"), 404, "campaign_not_found")
    assert len(twilio_rest.created_calls()) == already, "nothing was dialled"
    schema = tw.get("/openapi.json").json()["paths"]["/v1/campaigns"]["post"]["requestBody"]
    assert set(schema["content"]) == {"application/json", "multipart/form-data"}


async def test_pause_resume_cancel_and_a_deleted_agent_stops_its_campaign(
    twilio_server, tw, twilio_rest
):
    agent = scripted_agent(tw, phone_numbers=["+15550007804"])
    contacts = [{"phone": n} for n in numbers(8)]
    async with CallPlayer(twilio_server, twilio_rest, lambda *_: "completed", hold=0.2) as player:
        already = len(player.dialled())
        campaign = tw.post(
            "/v1/campaigns",
            json=campaign_body(agent, contacts, calls_per_minute=240, max_concurrent=1),
        ).json()
        url = f"/v1/campaigns/{campaign['id']}"
        while len(player.dialled()) - already < 2:
            await asyncio.sleep(0.05)
        assert tw.post(f"{url}/pause").json()["status"] == "paused"
        refusal(tw.post(f"{url}/pause"), 409, "campaign_paused")
        await asyncio.sleep(0.6)  # an attempt queued before the pause is still placed
        paused_at = len(player.dialled())
        await asyncio.sleep(1.5)  # six steps' time
        assert len(player.dialled()) == paused_at, "no call starts while paused"
        assert tw.post(f"{url}/resume").json()["status"] == "running"
        while len(player.dialled()) < paused_at + 2:
            await asyncio.sleep(0.05)
        cancelled = tw.post(f"{url}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["counts"]["cancelled"] >= 1
        refusal(tw.post(f"{url}/resume"), 409, "campaign_cancelled")
        await asyncio.sleep(0.6)
        placed = len(player.dialled()) - already
        await asyncio.sleep(0.6)
        assert len(player.dialled()) - already == placed < 8

        second = tw.post("/v1/campaigns", json=campaign_body(agent, contacts)).json()
        while len(player.dialled()) - already == placed:
            await asyncio.sleep(0.05)
        assert tw.delete(f"/v1/agents/{agent['id']}").status_code == 200
        stopped = await wait_for_campaign(tw, second["id"], "stopped")
        after_stop = len(player.dialled())
        await asyncio.sleep(0.6)
        assert len(player.dialled()) == after_stop, "a stopped campaign dials no more"
    assert stopped["stop_reason"] == "agent_deleted" and stopped["counts"]["cancelled"] >= 1


@pytest.mark.cluster
async def test_nothing_is_dialled_twice_when_a_node_is_killed_mid_campaign(
    tmp_path, scripted_llm, twilio_rest
):
    """Two nodes on one PostgreSQL run one campaign; the node placing its calls is killed
    (SIGKILL) mid-way. The other takes over its scheduler and dial jobs once their leases run
    out: every contact gets its one attempt, and no number is dialled twice."""
    env = {
        **cluster_storage_env(),
        **twilio_env(scripted_llm, twilio_rest),
        "SWITCHBOARD_JOB_LEASE_SECS": "2",
        "SWITCHBOARD_NODE_HEARTBEAT_SECS": "0.5",
        "SWITCHBOARD_NODE_LEASE_SECS": "3",
    }
    a = start_server(tmp_path / "node_a", preload=["scripted"], env=env)
    b = start_server(tmp_path / "node_b", preload=["scripted"], env=env)
    try:
        agent = scripted_agent(a.client(), phone_numbers=["+15550007809"])
        contacts = [{"phone": n} for n in numbers(16)]
        already = len(twilio_rest.created_calls())

        def placers() -> list[str]:  # each call's callbacks name the node that placed it
            return [r.value("StatusCallback") or "" for r in twilio_rest.created_calls()[already:]]

        async with CallPlayer(a, twilio_rest, lambda *_: "completed", hold=0.3) as player:
            campaign = (
                b.client()
                .post("/v1/campaigns", json=campaign_body(agent, contacts, max_concurrent=2))
                .json()
            )
            while len(player.dialled()) - already < 5:
                await asyncio.sleep(0.05)
            # Whichever node's worker took the campaign's jobs (B's hears of it first, A's poll
            # may come sooner on a busy machine) is killed; the other must take over.
            killed, survivor = (b, a) if placers()[-1].startswith(b.url) else (a, b)
            player.server = survivor  # the far ends report to the node that stays
            await asyncio.sleep(0.5)  # callbacks already on their way to the other arrive
            killed.stop(signal.SIGKILL)
            api = survivor.client()
            done = await wait_for_campaign(api, campaign["id"], "completed", timeout=120)
        dialled = Counter(player.dialled()[already:])
        assert max(dialled.values()) == 1, f"dialled twice: {dialled}"
        assert all(p.startswith(survivor.url) for p in placers()[-8:]), placers()
        items = api.get(f"/v1/campaigns/{campaign['id']}/contacts").json()["items"]
        # An attempt cut off between its session and Twilio's answer is recorded failed, not redialled.
        assert {c["phone"] for c in items if c["status"] == "completed"} <= set(dialled)
        assert all(c["attempts"] == 1 for c in items)
        assert done["counts"].get("completed", 0) >= 15 and sum(done["counts"].values()) == 16
    finally:
        a.stop()
        b.stop()


async def test_no_contact_is_called_outside_its_window(twilio_server, tw, twilio_rest):
    agent = scripted_agent(tw, phone_numbers=["+15550007805"])
    later = datetime.now(UTC) + timedelta(hours=2)
    window = {"start": f"{later:%H}:00", "end": f"{(later + timedelta(hours=1)):%H}:00"}
    contacts = [{"phone": n, "timezone": "UTC"} for n in numbers(3)]
    already = len(twilio_rest.created_calls())
    campaign = tw.post(
        "/v1/campaigns", json=campaign_body(agent, contacts, calls_per_minute=240, window=window)
    ).json()
    await asyncio.sleep(1.5)  # six scheduling steps
    assert len(twilio_rest.created_calls()) == already
    waiting = tw.get(f"/v1/campaigns/{campaign['id']}").json()
    assert waiting["status"] == "running" and waiting["counts"] == {"pending": 3}
    assert tw.post(f"/v1/campaigns/{campaign['id']}/cancel").json()["counts"] == {"cancelled": 3}


async def test_a_machine_gets_the_message_after_the_beep_and_a_person_the_agent(
    twilio_server, tw, twilio_rest, llm
):
    agent = scripted_agent(
        tw, greeting="Hello, this is the clinic.", phone_numbers=["+15550007806"]
    )
    person, machine = numbers(2)
    message = "Please call the clinic back. Goodbye."
    person_heard = {"voicemail": {"choice": "conversation", "probabilities": {"conversation": 1}}}
    llm.script_oneshot(json.dumps(person_heard), when="Decide whether a person answered")
    tasks: dict[str, str] = {}
    """The call task of each number."""

    async def answer(server, request) -> None:
        """Join the call's stream; then answering-machine detection's verdict for the number."""
        connect = request.value("Url").removeprefix(server.url)
        tasks[request.value("To") or ""] = connect.split("/")[-2]
        twiml = await asyncio.to_thread(
            signed_post, server, connect, {"AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
        )
        assert twiml.status_code == 200, twiml.text
        with server.client() as api:
            task = api.get(f"/v1/calls/{tasks[request.value('To') or '']}").json()
        async with TwilioMediaStreamsClient.from_twiml(
            twiml.text, call_sid=task["call_sid"]
        ) as client:
            verdict = "machine_end_beep" if request.value("To") == machine else "human"
            if verdict == "human":  # the greeting waits for a person to be heard
                await client.send_audio(speech("Hello? This is Sam.", sample_rate=8000))
                await client.send_silence(1.5)
                await client.wait_marks(1, timeout=60)
            else:  # the machine's greeting plays on the connected stream
                with server.client() as api:
                    await asyncio.to_thread(wait_for_status, api, task["session_id"], "active")
            amd = urlsplit(request.value("AsyncAmdStatusCallback") or "").path
            form = {"AccountSid": ACCOUNT_SID, "AnsweredBy": verdict}
            assert (await asyncio.to_thread(signed_post, server, amd, form)).status_code == 204
            if verdict == "human":
                await client.stop()
            await client.wait_closed(timeout=60)  # a machine: the server hangs up after the message

    already = len(twilio_rest.created_calls())
    async with CallPlayer(twilio_server, twilio_rest, lambda *_: "completed", 0.1, answer):
        voicemail = {"action": "leave_message", "message": message}
        contacts = [{"phone": person}, {"phone": machine}]
        created = tw.post(
            "/v1/campaigns",
            json=campaign_body(agent, contacts, voicemail=voicemail, max_concurrent=1),
        )
        assert created.status_code == 201, created.text
        done = await wait_for_campaign(tw, created.json()["id"], "completed")
        # The machine's call goes on past its attempt's end: the message is left after the quiet.
        items = tw.get(f"/v1/campaigns/{created.json()['id']}/contacts").json()["items"]
        for contact in items:
            await asyncio.to_thread(wait_for_status, tw, contact["session_ids"][0], "completed", 60)
    placed = twilio_rest.created_calls()[already:]
    assert sorted(r.value("To") for r in placed) == [person, machine]
    assert {(r.value("MachineDetection"), r.value("AsyncAmd")) for r in placed} == {
        ("DetectMessageEnd", "true")
    }
    assert done["counts"] == {"completed": 1, "voicemail": 1}

    items = tw.get(f"/v1/campaigns/{created.json()['id']}/contacts").json()["items"]
    outcome = {c["phone"]: c for c in items}
    assert outcome[machine]["status"] == "voicemail"
    left = wait_for_status(tw, outcome[machine]["session_ids"][0], "completed")
    assert left["end_reason"] == "voicemail"
    spoken = tw.get(f"/v1/sessions/{left['session_id']}/transcript").json()["items"]
    assert [t["content"] for t in spoken if t["speaker"] == "AGENT"][-1] == message
    call = tw.get(f"/v1/calls/{tasks[machine]}").json()
    await asyncio.to_thread(twilio_rest.wait_for_hang_up, call["call_sid"], 15)

    talked = wait_for_status(tw, outcome[person]["session_ids"][0], "completed")
    assert outcome[person]["status"] == "completed" and talked["end_reason"] != "voicemail"


async def test_a_machine_before_the_stream_is_hung_up_through_the_rest_api(
    twilio_server, tw, twilio_rest
):
    agent = scripted_agent(tw, phone_numbers=["+15550007807"])
    [machine] = numbers(1)
    tasks: list[str] = []

    async def verdict_only(server, request) -> None:
        """Detection decides before the call's stream connects."""
        tasks.append(request.value("Url").removeprefix(server.url).split("/")[-2])
        with server.client() as api:
            while not (call_sid := api.get(f"/v1/calls/{tasks[-1]}").json()["call_sid"]):
                await asyncio.sleep(0.05)  # Twilio has answered the REST request by now
        amd = urlsplit(request.value("AsyncAmdStatusCallback") or "").path
        form = {"AccountSid": ACCOUNT_SID, "CallSid": call_sid, "AnsweredBy": "machine_end_silence"}
        assert (await asyncio.to_thread(signed_post, server, amd, form)).status_code == 204

    async with CallPlayer(twilio_server, twilio_rest, lambda *_: "completed", 0.1, verdict_only):
        created = tw.post(
            "/v1/campaigns",
            json=campaign_body(
                agent,
                [{"phone": machine}],
                voicemail={"action": "hang_up"},
                max_attempts=2,
                retry_after_minutes=0.01,
            ),
        ).json()
        done = await wait_for_campaign(tw, created["id"], "completed")
    assert done["counts"] == {"voicemail": 1}
    [contact] = tw.get(f"/v1/campaigns/{created['id']}/contacts").json()["items"]
    assert contact["attempts"] == 2 and contact["last_outcome"] == "voicemail"  # retried once
    for task, session_id in zip(tasks, contact["session_ids"], strict=True):
        assert tw.get(f"/v1/sessions/{session_id}").json()["end_reason"] == "voicemail"
        call_sid = tw.get(f"/v1/calls/{task}").json()["call_sid"]
        await asyncio.to_thread(twilio_rest.wait_for_hang_up, call_sid, 15)


async def test_a_parallel_burst_of_hostile_campaigns_is_refused_cleanly(
    twilio_server, tw, twilio_rest
):
    """Two accounts fire 48 campaign requests at once: malformed bodies, oversized CSV fields,
    another account's agent and number, and a few good ones. Every answer is a 201 or a 4xx with
    the error shape; only the good ones exist, and neither account sees the other's."""
    agent = scripted_agent(tw, phone_numbers=["+15550007810"])
    other = account_client(twilio_server, "burst rival")
    rival = scripted_agent(other, phone_numbers=["+15550007811"])
    later = datetime.now(UTC) + timedelta(hours=3)
    closed = {"start": f"{later:%H}:00", "end": f"{(later + timedelta(hours=1)):%H}:00"}
    good = campaign_body(agent, [{"phone": numbers(1)[0], "timezone": "UTC"}], window=closed)
    fields = json.dumps({k: v for k, v in good.items() if k != "contacts"})
    wide = "phone,note\n+14155550100," + "x" * 200_000 + "\n"
    cases: list[tuple[int, dict]] = [
        (201, {"json": good}),
        (422, {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        (422, {"json": [1, 2, 3]}),
        (422, {"json": {**good, "contacts": "everyone"}}),
        (422, {"json": {**good, "contacts": [{"phone": "+1" + "9" * 40}]}}),
        (404, {"json": {**good, "agent_id": rival["id"]}}),
        (403, {"json": {**good, "from": rival["phone_numbers"][0]}}),
        (422, {"files": {"contacts": ("c.csv", wide, "text/csv")}, "data": {"campaign": fields}}),
        (
            422,
            {
                "files": {"contacts": ("c.csv", b"\xff\xfe\x00", "text/csv")},
                "data": {"campaign": fields},
            },
        ),
        (422, {"files": {"other": ("c.csv", "phone\n", "text/csv")}, "data": {"campaign": fields}}),
        (415, {"content": b"phone\n+14155550100\n", "headers": {"content-type": "text/csv"}}),
        (413, {"content": b"x" * (2 << 20), "headers": {"content-type": "application/json"}}),
    ]
    async with httpx.AsyncClient(base_url=twilio_server.url, timeout=60) as client:

        async def send(status: int, request: dict) -> tuple[int, httpx.Response]:
            headers = {"X-API-Key": tw.headers["X-API-Key"], **request.pop("headers", {})}
            return status, await client.post("/v1/campaigns", headers=headers, **request)

        answers = await asyncio.gather(
            *(send(status, dict(request)) for status, request in cases * 4)
        )
    created = []
    for status, response in answers:
        assert response.status_code == status, response.text[:300]
        if status == 201:
            created.append(response.json()["id"])
        else:
            body = response.json()
            assert body["code"] and body["message"], body
    mine = {c["id"] for c in tw.get("/v1/campaigns").json()}
    assert set(created) <= mine and len(created) == 4
    assert not {c["id"] for c in other.get("/v1/campaigns").json()} & mine
    for campaign_id in created:
        assert other.get(f"/v1/campaigns/{campaign_id}").status_code == 404
        assert other.post(f"/v1/campaigns/{campaign_id}/cancel").status_code == 404
        assert tw.post(f"/v1/campaigns/{campaign_id}/cancel").status_code == 200
    other.close()


async def test_a_machine_only_the_pipeline_heard_ends_its_attempt_voicemail(
    twilio_server, tw, twilio_rest, llm
):
    """Twilio's final `completed` may come before the node running the call has written its
    end: the attempt waits for the session's end, here `voicemail` from the pipeline's detector
    (Twilio's own detection gave no verdict)."""
    agent = scripted_agent(
        tw, greeting="Hello, this is the clinic.", phone_numbers=["+15550007812"]
    )
    machine_heard = {"voicemail": {"choice": "voicemail", "probabilities": {"voicemail": 1}}}
    llm.script_oneshot(*[json.dumps(machine_heard)] * 6, when="Decide whether a person answered")
    tone = np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000) * 8000
    streams: list[asyncio.Task] = []

    async def machine(twiml: str, call_sid: str) -> None:
        async with TwilioMediaStreamsClient.from_twiml(twiml, call_sid=call_sid) as client:
            greeting = "Hi, you've reached Dana. Please leave a message after the tone."
            await client.send_audio(speech(greeting, sample_rate=8000))
            await client.send_audio(tone.astype(np.int16).tobytes())
            silence = asyncio.create_task(client.send_silence(30))
            await client.wait_closed(timeout=60)  # the server hangs up on the machine
            silence.cancel()

    async def answer(server, request) -> None:
        """The machine picks up; Twilio's `completed` follows while the call still runs."""
        connect = request.value("Url").removeprefix(server.url)
        form = {"AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
        twiml = await asyncio.to_thread(signed_post, server, connect, form)
        assert twiml.status_code == 200, twiml.text
        with server.client() as api:
            task = api.get(f"/v1/calls/{connect.split('/')[-2]}").json()
            streams.append(asyncio.create_task(machine(twiml.text, task["call_sid"])))
            await asyncio.to_thread(wait_for_status, api, task["session_id"], "active")

    async with CallPlayer(twilio_server, twilio_rest, lambda *_: "completed", 0.1, answer):
        body = campaign_body(
            agent, [{"phone": numbers(1)[0]}], voicemail={"action": "hang_up"}, max_concurrent=1
        )
        created = tw.post("/v1/campaigns", json=body)
        assert created.status_code == 201, created.text
        done = await wait_for_campaign(tw, created.json()["id"], "completed")
        await asyncio.gather(*streams)
    assert done["counts"] == {"voicemail": 1}
    contact = tw.get(f"/v1/campaigns/{created.json()['id']}/contacts").json()["items"][0]
    assert contact["last_outcome"] == "voicemail"
    session = tw.get(f"/v1/sessions/{contact['session_ids'][0]}").json()
    assert session["end_reason"] == "voicemail"


async def test_a_scheduling_step_that_fails_every_attempt_stops_its_campaign(db):
    """The job queue gives a job up after its last attempt and tells its kind; a campaign whose
    scheduling step was given up stops (`scheduling_failed`), its waiting contacts cancelled."""
    async with db.sessions() as s:
        agent = await add_agent(s, [])
        campaign = Campaign(
            id=new_id("cmp"),
            account_id=DEFAULT_ACCOUNT_ID,
            agent_id=agent.id,
            name="c",
            from_number="+15550007813",
            calls_per_minute=60,
            max_concurrent=1,
            max_attempts=1,
            retry_after_minutes=1,
        )
        s.add(campaign)
        await s.flush()
        s.add(
            CampaignContact(
                id=new_id("cct"),
                campaign_id=campaign.id,
                row=1,
                phone="+14155550100",
                timezone="UTC",
            )
        )
        await s.commit()
    state = SimpleNamespace(db=db)
    settings = Settings(webhook_max_attempts=2, webhook_backoff_secs=0.05)
    jobs = JobQueue(db, settings)
    tried: list[int] = []

    async def failing_tick(job) -> None:
        tried.append(job.attempts)
        raise RuntimeError("the database went away")

    given_up = asyncio.Event()

    async def stop(job, error: str) -> None:
        await campaigns.tick_gave_up(state, job, error)  # type: ignore[arg-type]  # needs only .db
        given_up.set()

    jobs.start({campaigns.TICK_JOB: failing_tick}, gave_up={campaigns.TICK_JOB: stop})
    try:
        async with db.sessions() as s:
            jobs.enqueue(s, campaigns.TICK_JOB, {"campaign_id": campaign.id, "seq": 0})
            await s.commit()
        await asyncio.wait_for(given_up.wait(), timeout=20)
    finally:
        await jobs.close()
    assert tried == [1, 2]
    async with db.sessions() as s:
        stopped = await s.get_one(Campaign, campaign.id)
        assert (stopped.status, stopped.stop_reason) == ("stopped", "scheduling_failed")
        contact = (await s.scalars(select(CampaignContact))).one()
        assert contact.status == "cancelled"
