"""Campaigns (issue 17): an agent calls a list of contacts through Twilio's REST API (the local
fake), paced, under its concurrency cap, with retries; exactly once per attempt, even when a
node is killed mid-campaign. The test plays Twilio's side: status callbacks, and for one call
the media stream."""

import asyncio
import csv
import io
import json
import time
from collections import Counter

from tests.fakes.twilio_client import TwilioMediaStreamsClient
from tests.helpers.calls import wait_for_status
from tests.helpers.servers import scripted_agent
from tests.helpers.twilio import ACCOUNT_SID, CallPlayer, signed_post

FROM = "+15550007777"
ALWAYS_OPEN = {"start": "00:00", "end": "23:59"}


def numbers(count: int) -> list[str]:
    return [f"+1415555{index:04d}" for index in range(1, count + 1)]


def campaign_body(agent_id: str, contacts: list[dict], **fields) -> dict:
    return {
        "agent_id": agent_id,
        "from": FROM,
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
    agent = scripted_agent(tw, greeting="Hi {{name}}.", phone_numbers=[FROM])
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
                agent["id"], contacts, max_attempts=2, retry_after_minutes=0.01, window=ALWAYS_OPEN
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
    assert {r.value("From") for r in placed} == {FROM}
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
    agent = scripted_agent(tw, greeting="Hi {{name}}, about {{topic}}.", phone_numbers=[FROM])
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
        fields = {k: v for k, v in campaign_body(agent["id"], []).items() if k != "contacts"}
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
