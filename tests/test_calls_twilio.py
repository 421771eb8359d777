"""Inline calls over Twilio Media Streams (the Twilio test client), one control at a time,
and the `transfer_call` tool (cold, and warm with the person's leg played by the test through
signed callbacks) against the local stand-in for Twilio's REST API."""

import asyncio
import contextlib
import io
import json
import time
import wave
from urllib.parse import urlsplit
from xml.etree import ElementTree

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed

from app.telephony.transfer import HOLD_MESSAGE
from pipelines.builder import INACTIVITY_GOODBYE, STILL_THERE, TIME_UP_GOODBYE
from tests.audio import channel_energy, rms, speech
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.speech import Transcriber
from tests.fakes.twilio_client import TwilioMediaStreamsClient, parse_twiml, ulaw_decode
from tests.helpers.calls import LONG_GREETING, transcript, wait_for_status
from tests.helpers.servers import scripted_agent
from tests.helpers.twilio import ACCOUNT_SID, CALLER, signed_post

TRANSFER_TO = "+14155550142"


def inline_twilio_call(api, **fields) -> tuple[str, dict]:
    """The TwiML and session of an inline call, as POST /v1/calls/inline returns them."""
    body = {
        "systemPrompt": "You are a helpful receptionist. Answer in one short sentence.",
        "voice": "joe",
        "language": "en",
        "greeting": "Hello, thanks for calling.",
        "pipeline": "scripted",
        **fields,
    }
    response = api.post("/v1/calls/inline", json=body)
    assert response.status_code == 201, response.text
    call = response.json()
    assert call["connection_type"] == "twilio"  # the default
    stream_url, parameters = parse_twiml(call["markup"])
    assert stream_url == call["url"] and set(parameters) == {"token"}
    return call["markup"], call["session"]


def agent_pcm(client: TwilioMediaStreamsClient) -> bytes:
    return ulaw_decode(bytes(client.agent_audio))


async def test_user_first_over_twilio(twilio_server, tw, llm):
    llm.script("We open at nine tomorrow.")
    question = speech("What time do you open tomorrow?", sample_rate=8000)
    twiml, session = inline_twilio_call(
        tw, firstSpeaker="user", greeting="This greeting must not be spoken."
    )
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.send_silence(3.0)
        assert not client.agent_audio
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_marks(1, timeout=60)
        assert rms(agent_pcm(client)) > 300
        await client.stop()
    wait_for_status(tw, session["session_id"], "completed")
    items = transcript(tw, session["session_id"])
    assert [t["speaker"] for t in items] == ["USER", "AGENT"]
    assert items[-1]["content"] == "We open at nine tomorrow."


async def test_non_interruptible_over_twilio(twilio_server, tw, llm):
    llm.script("Happy to help with that.")
    question = speech("I have a question about parking at the clinic", sample_rate=8000)
    twiml, session = inline_twilio_call(tw, interruptible=False, greeting=LONG_GREETING)
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_until(lambda: len(client.agent_audio) > 8000, 30, "the greeting started")
        await asyncio.sleep(1.5)
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)  # the greeting, then the answer, both played out
        await client.stop()
    assert not client.events("clear")  # Twilio was never told to drop the agent's audio
    greeting_bytes = client.marks_received["utterance-1"][1]
    assert greeting_bytes / 8000 > 10  # the whole greeting was sent
    wait_for_status(tw, session["session_id"], "completed")
    items = transcript(tw, session["session_id"])
    # Agent turns enter the transcript once heard (Twilio's mark echo), so entries written while the
    # greeting played may land in either order: look the greeting up by its text.
    agent_turns = {t["content"]: t for t in items if t["speaker"] == "AGENT"}
    assert LONG_GREETING in agent_turns and not agent_turns[LONG_GREETING]["interrupted"]
    assert any(t["speaker"] == "USER" and "parking" in t["content"].lower() for t in items)
    assert "Happy to help with that." in agent_turns


async def test_inactivity_prompt_then_end_over_twilio(twilio_server, tw, twilio_rest, llm):
    twiml, session = inline_twilio_call(tw, inactivityTimeout=10, inactivityAction="prompt")
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        microphone = asyncio.create_task(client.send_silence(60))
        await client.wait_closed(timeout=60)
        microphone.cancel()
    hang_up = twilio_rest.wait_for_hang_up(client.call_sid, 10)
    assert hang_up is not None
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "inactivity" and 20 < done["duration_secs"] < 45
    assert [t["content"] for t in transcript(tw, session["session_id"])] == [
        "Hello, thanks for calling.",
        STILL_THERE,
        INACTIVITY_GOODBYE,
    ]


async def test_max_duration_over_twilio(twilio_server, tw, llm):
    twiml, session = inline_twilio_call(tw, maxDuration=60)
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        microphone = asyncio.create_task(client.send_silence(90))
        await client.wait_marks(1, timeout=30)
        before_goodbye = len(client.agent_audio)
        await client.wait_closed(timeout=90)
        microphone.cancel()
    assert rms(ulaw_decode(bytes(client.agent_audio[before_goodbye:]))) > 300
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "max_duration" and 58 < done["duration_secs"] < 75
    assert transcript(tw, session["session_id"])[-1]["content"] == TIME_UP_GOODBYE


async def test_recording_over_twilio(twilio_server, tw, llm):
    llm.script("Sure, we open at nine.")
    question = speech("What time do you open tomorrow?", sample_rate=8000)
    twiml, session = inline_twilio_call(tw, greeting="Hello, thanks for calling the clinic.")
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_marks(2, timeout=60)
        await client.stop()
    wait_for_status(tw, session["session_id"], "completed")
    response = tw.get(f"/v1/sessions/{session['session_id']}/recording")
    assert response.status_code == 200
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getnchannels() == 2
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    caller, agent = channel_energy(samples[:, 0], rate), channel_energy(samples[:, 1], rate)
    loud_caller, loud_agent = np.flatnonzero(caller > 300), np.flatnonzero(agent > 300)
    assert len(loud_caller) > 5 and len(loud_agent) > 10
    assert loud_agent[0] < loud_caller[0] < loud_agent[-1]  # greeting, caller, answer: in order


async def test_transfer_call_moves_the_call_through_twilio_rest(
    twilio_server, tw, twilio_rest, llm
):
    tool = {
        "name": "transfer_to_billing",
        "description": "Transfer the caller to billing",
        "type": "transfer_call",
        "phone_number": TRANSFER_TO,
    }
    llm.script(ToolCall("transfer_to_billing", {}))
    question = speech("Please transfer me to billing.", sample_rate=8000)
    twiml, session = inline_twilio_call(tw, tools=[tool])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)
        await client.send_audio(question)
        await client.send_silence(1.0)
        await client.wait_closed(timeout=60)
    path = f"/2010-04-01/Accounts/{twilio_rest.account_sid}/Calls/{client.call_sid}.json"
    updates = [r for r in twilio_rest.requests if r.path == path]
    assert [r.value("Twiml") for r in updates] == [
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{TRANSFER_TO}</Dial></Response>'
    ]
    assert (updates[0].username, updates[0].password) == (
        twilio_rest.account_sid,
        twilio_rest.auth_token,
    )
    assert not twilio_rest.hang_ups(client.call_sid)  # the transferred call lives on
    done = wait_for_status(tw, session["session_id"], "completed")
    assert done["end_reason"] == "transferred"
    items = transcript(tw, session["session_id"])
    assert items[-1]["speaker"] == "TOOL" and TRANSFER_TO in items[-1]["content"]
    time.sleep(0.5)
    assert not twilio_rest.hang_ups(client.call_sid)


SUMMARY = "Dana is calling about order 4711, which arrived broken, and wants a refund."


def warm_transfer_call(tw, llm, our_number: str, **tool_fields) -> tuple[str, str]:
    """An agent with a warm transfer_call tool on `our_number` whose LLM calls it at the caller's
    first turn: the TwiML and session id of a call to it."""
    tool = {
        "name": "transfer_to_billing",
        "description": "Transfer the caller to billing",
        "type": "transfer_call",
        "phone_number": TRANSFER_TO,
        "mode": "warm",
        **tool_fields,
    }
    agent = scripted_agent(
        tw, tools=[tool], phone_numbers=[our_number], greeting="Hello, thanks for calling."
    )
    llm.script(ToolCall("transfer_to_billing", {}))
    llm.script_oneshot(SUMMARY, when="human colleague")
    response = tw.post(
        "/v1/sessions/twilio",
        json={"agentId": agent["id"], "from": CALLER, "to": our_number},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()["twiml"], response.json()["session"]["session_id"]


async def ring_the_person(
    client, tw, session_id: str, twilio_rest, llm, our_number: str
) -> tuple[object, str]:
    """The caller asks to be transferred and is told to hold; the person's leg as Twilio's REST
    API was asked to place it (from `our_number`), and the callbacks' path."""
    await client.wait_marks(1, timeout=30)
    placed = len(twilio_rest.created_calls())  # the module's earlier calls are not this one's
    await client.send_audio(
        speech("This is Dana and order 4711 arrived broken so put me through to billing", 8000)
    )
    silence = asyncio.create_task(client.send_silence(30))
    try:
        await client.wait_until(
            lambda: len(twilio_rest.created_calls()) > placed,
            60,
            "the person rung",
        )
    finally:
        silence.cancel()
    leg = twilio_rest.created_calls()[placed]
    assert leg.value("To") == TRANSFER_TO
    assert leg.value("From") == our_number
    base = urlsplit(leg.value("Url")).path.removesuffix("/answer")
    assert urlsplit(leg.value("StatusCallback")).path == f"{base}/status"
    # The summary came from the agent's LLM, which read the call so far.
    request = next(r for r in llm.oneshot_requests if "human colleague" in json.dumps(r))
    asked = request["messages"][-1]["content"]  # the transcript, with what the caller said
    said = next(t["content"] for t in transcript(tw, session_id) if t["speaker"] == "USER")
    assert f"Caller: {said}" in asked and "Agent: Hello, thanks for calling." in asked
    await client.wait_marks(2, timeout=30)  # the caller heard the greeting, then to hold
    return leg, base


async def forged_callbacks_are_refused(server, base: str) -> None:
    """A burst of callbacks for the person's leg that Twilio didn't sign (403), or for transfers
    that don't exist (404), all at once: none of them moves the transfer."""
    form = {"AccountSid": ACCOUNT_SID, "CallStatus": "no-answer"}

    def forged(index: int) -> httpx.Response:
        path = f"{base}/{'status' if index % 2 else 'answer'}"
        if index % 3 == 0:
            return signed_post(server, f"/v1/twilio/transfers/xfr_{index}/status", form)
        if index % 3 == 1:
            return httpx.post(server.url + path, data=form, timeout=30)
        return signed_post(server, path, form, token="not-the-auth-token")

    responses = await asyncio.gather(*(asyncio.to_thread(forged, i) for i in range(24)))
    assert [r.status_code for r in responses] == [404 if i % 3 == 0 else 403 for i in range(24)]
    assert all(r.json()["code"] for r in responses)  # the error shape


async def test_warm_transfer_reads_the_person_a_summary_then_bridges_the_caller(
    twilio_server, tw, twilio_rest, llm
):
    twiml, session_id = warm_transfer_call(tw, llm, "+15550003331", answer_timeout_secs=20)
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        leg, base = await ring_the_person(client, tw, session_id, twilio_rest, llm, "+15550003331")
        assert leg.value("Timeout") == "20"
        unsigned = httpx.post(twilio_server.url + f"{base}/answer", data={"CallSid": "CA1"})
        assert unsigned.status_code == 403
        answer = signed_post(
            twilio_server,
            f"{base}/answer",
            {"AccountSid": ACCOUNT_SID, "CallSid": "CA" + "7" * 32, "CallStatus": "in-progress"},
        )
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
        person = ElementTree.fromstring(answer.text)
        assert [verb.tag for verb in person] == ["Connect", "Dial"]  # first the summary
        room = person.find("./Dial/Conference")
        assert room is not None and room.get("startConferenceOnEnter") == "true"
        # The person's leg: our media stream speaks the summary, then closes (Twilio dials on).
        async with TwilioMediaStreamsClient.from_twiml(answer.text) as person_leg:
            await person_leg.wait_closed(timeout=60)
        assert person_leg.close_code == 1000
        heard = " ".join(
            w.text for w in Transcriber().words(ulaw_decode(bytes(person_leg.agent_audio)), 8000)
        ).lower()
        facts = [word for word in ("dana", "order", "broken", "refund") if word in heard]
        assert len(facts) >= 3, heard  # the summary, spoken in the agent's voice
        async with TwilioMediaStreamsClient.from_twiml(answer.text) as replay:
            await replay.wait_closed(timeout=10)
        assert replay.close_code == 4409 and not replay.agent_audio  # its token was used
        await client.wait_until(
            lambda: twilio_rest.twiml_updates(client.call_sid), 30, "the caller moved"
        )
        caller = ElementTree.fromstring(twilio_rest.twiml_updates(client.call_sid)[0])
        caller_room = caller.find("./Dial/Conference")
        assert caller_room is not None and caller_room.text == room.text  # the same conference
        assert caller_room.get("startConferenceOnEnter") == "false"  # hold music until the person
        with contextlib.suppress(ConnectionClosed):  # unless the server has ended it first,
            await client.stop()  # Twilio stops the stream of a call given new TwiML
        await client.wait_closed(timeout=30)
    done = wait_for_status(tw, session_id, "completed")
    assert done["end_reason"] == "transferred"
    assert not twilio_rest.hang_ups(client.call_sid)
    items = transcript(tw, session_id)
    assert any(t["speaker"] == "AGENT" and t["content"] == HOLD_MESSAGE for t in items)
    tool_entry = json.loads(next(t["content"] for t in items if t["speaker"] == "TOOL"))
    assert tool_entry["result"] == {"ok": True, "status": f"transferred to {TRANSFER_TO}"}
    spec = tw.get("/openapi.json").json()
    assert "/v1/twilio/transfers/{transfer_id}/answer" in spec["paths"]
    assert {"mode", "answer_timeout_secs"} <= set(
        spec["components"]["schemas"]["ToolOut"]["properties"]
    )
    # A second answer (Twilio retrying, or anyone replaying it) gets no conference.
    again = signed_post(twilio_server, f"{base}/answer", {"CallStatus": "in-progress"})
    assert again.status_code == 200 and "<Conference" not in again.text


async def test_warm_transfer_nobody_answers_and_the_agent_carries_on(
    twilio_server, tw, twilio_rest, llm
):
    twiml, session_id = warm_transfer_call(tw, llm, "+15550003332")
    sorry = "Nobody in billing picked up, sorry. Can I help with anything else?"
    llm.script(sorry, "We open at nine tomorrow.")
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        leg, base = await ring_the_person(client, tw, session_id, twilio_rest, llm, "+15550003332")
        assert leg.value("Timeout") == "30"  # the default
        await forged_callbacks_are_refused(twilio_server, base)
        assert not [
            t for t in transcript(tw, session_id) if t["speaker"] == "TOOL"
        ]  # still ringing
        status = signed_post(
            twilio_server, f"{base}/status", {"AccountSid": ACCOUNT_SID, "CallStatus": "no-answer"}
        )
        assert status.status_code == 204
        await client.wait_until(
            lambda: any(t["content"] == sorry for t in transcript(tw, session_id)),
            60,
            "the caller told",
        )
        await client.send_audio(speech("What time do you open tomorrow?", sample_rate=8000))
        await client.send_silence(1.0)
        await client.wait_until(
            lambda: transcript(tw, session_id)[-1]["content"] == "We open at nine tomorrow.",
            60,
            "the conversation carried on",
        )
        await client.stop()
    done = wait_for_status(tw, session_id, "completed")
    assert done["end_reason"] == "caller_hangup"
    assert not twilio_rest.twiml_updates(client.call_sid)  # the caller was never moved
    tool_entry = json.loads(
        next(t["content"] for t in transcript(tw, session_id) if t["speaker"] == "TOOL")
    )
    assert tool_entry["result"] == {"error": "the transfer failed: the person did not answer"}
