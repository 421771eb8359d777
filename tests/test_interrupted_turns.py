"""An agent reply the caller cuts off is kept as far as the caller heard it: stored as an
interrupted AGENT entry, sent as `transcript.agent` with `interrupted: true`, and left in
the LLM context truncated, on the session WebSocket, a Twilio stream and WebRTC.

A long scripted reply is cut off by Piper speech (the caller) 0.3 s, 1 s and 3 s after its
audio starts, in one call on the WebSocket and one on Twilio; 1 s in over WebRTC.
"""

import asyncio
import time
from itertools import combinations

from app.client import SessionClient
from tests.audio import speech
from tests.fakes.twilio_client import TwilioMediaStreamsClient
from tests.helpers.calls import agent_ws, wait_for_status
from tests.helpers.servers import scripted_agent
from tests.helpers.twilio import twilio_session
from tests.helpers.webrtc import WebRTCCaller

LONG_REPLY = (
    "Let me tell you everything about our opening hours this week. On Monday we open at "
    "eight in the morning and close at six in the evening. On Tuesday we open at nine and "
    "close at seven. On Wednesday we open at eight and close at five. On Thursday we open "
    "late, at ten, and close at eight. On Friday we open at eight and close at four."
)
BARGE_IN_AFTER_SECS = (0.3, 1.0, 3.0)
BARGE_IN = "Hold on a moment please"
WORDS_PER_SEC = 3.8
"""How fast the test voice speaks `LONG_REPLY` (68 words in 17.8 s)."""
WORDS_PER_LOUD_SEC = 4.8
"""The same, counting only the audio loud enough to be speech (68 words in 14.2 s)."""
SLACK_SECS = 0.7
"""How far the words kept may be from the words spoken before the caller was heard."""


def heard_words(text: str) -> int:
    """How many words of `LONG_REPLY` `text` is; it must be the reply's start."""
    words = text.split()
    assert words == LONG_REPLY.split()[: len(words)], text
    return len(words)


def check_cut_offs(
    heard: list[str], heard_after: list[float], words_per_sec: float = WORDS_PER_SEC
) -> None:
    """Each cut-off reply holds about the words of the audio the caller got before the
    cut-off (`heard_after` seconds of it): none empty, none whole, later ones more."""
    counts = [heard_words(text) for text in heard]
    for count, secs in zip(counts, heard_after, strict=True):
        assert 1 <= count < len(LONG_REPLY.split()), (heard, heard_after)
        assert count <= words_per_sec * (secs + SLACK_SECS) + 1, (heard, heard_after)
        assert count >= words_per_sec * (secs - SLACK_SECS), (heard, heard_after)
    for i, j in combinations(range(len(counts)), 2):
        if abs(heard_after[j] - heard_after[i]) > 1.0:
            i, j = sorted((i, j), key=lambda k: heard_after[k])
            assert counts[j] > counts[i], (heard, heard_after)


def check_context(llm, first_request: int, heard: list[str]) -> None:
    """The request after each barge-in holds the reply as heard, never the whole reply."""
    for index, text in enumerate(heard):
        messages = llm.requests[first_request + index]["messages"]
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        assert assistant[-1] == text, (assistant, text)
        assert LONG_REPLY not in assistant
        assert messages[-1]["role"] == "user"


async def test_session_websocket_keeps_what_the_caller_heard(server, api, llm):
    llm.script(*[LONG_REPLY] * len(BARGE_IN_AFTER_SECS), "Okay.")
    agent = scripted_agent(api)
    heard, heard_after = [], []
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.stream(speech("What are your hours?", tail_secs=1.0))
        for turn, after in enumerate(BARGE_IN_AFTER_SECS, start=1):
            started = await client.wait_for("agent.speech.started", timeout=60, count=turn)
            first_audio = next(at for at, _ in client.audio_log if at >= started["_at"] - 0.2)
            await asyncio.sleep(max(0.0, first_audio + after - time.monotonic()))
            barged_at = time.monotonic()
            barge = asyncio.create_task(
                client.stream(speech(BARGE_IN, lead_secs=0.0, tail_secs=1.5))
            )
            cut_off = await client.wait_for("transcript.agent", timeout=15, count=turn)
            assert cut_off["interrupted"] is True, cut_off
            heard.append(cut_off["text"])
            # The server heard the caller (and the client dropped the agent's audio) here.
            caller_heard = next(
                e["_at"] for e in client.of_type("input.speech.started") if e["_at"] > barged_at
            )
            await asyncio.sleep(0.5)  # the audio already under way arrives
            # The server sends audio as it plays: the reply's audio received is what was heard.
            heard_after.append(
                sum(n for at, n in client.audio_log if first_audio <= at <= caller_heard + 0.5)
                / 2
                / 16000
            )
            await barge
            await client.wait_for("transcript.user", timeout=30, count=turn + 1)
        await client.wait_for("transcript.agent", timeout=30, count=len(heard) + 1)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    check_cut_offs(heard, heard_after)
    check_context(llm, 1, heard)
    wait_for_status(api, ready["session_id"], "completed")
    items = api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
    stored = [(i["content"], i["interrupted"]) for i in items if i["speaker"] == "AGENT"]
    assert stored == [*[(text, True) for text in heard], ("Okay.", False)], items


async def test_twilio_stream_keeps_what_the_caller_heard(twilio_server, tw, llm):
    llm.script(*[LONG_REPLY] * len(BARGE_IN_AFTER_SECS), "Okay.")
    agent = scripted_agent(tw, greeting="Hello.")
    twiml, session = twilio_session(tw, agent["id"])
    heard_after = []
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)  # the greeting has played
        seen = len(client.media_log)
        await client.send_audio(speech("What are your hours?", sample_rate=8000))
        for turn, after in enumerate(BARGE_IN_AFTER_SECS, start=1):
            # The reply starts with the first audio after the last cut-off (or the greeting).
            idle = asyncio.create_task(client.send_silence(30))
            await client.wait_until(lambda n=seen: len(client.media_log) > n, 60, "the reply")
            idle.cancel()
            first_audio = client.media_log[seen][0]
            await asyncio.sleep(max(0.0, first_audio + after - time.monotonic()))
            await client.send_audio(
                speech(BARGE_IN, sample_rate=8000, lead_secs=0.0, tail_secs=0.3)
            )
            await client.wait_until(lambda n=turn: len(client.events("clear")) >= n, 10, "clear")
            # Twilio plays what it was sent (the server sends it as it plays) until its `clear`.
            cleared_at = [at for at, m in client.received if m.get("event") == "clear"][-1]
            sent = [audio for at, audio in client.media_log[seen:] if at <= cleared_at]
            heard_after.append(sum(map(len, sent)) / 8000)
            seen = len(client.media_log)  # the cut-off reply's audio ends before its `clear`
        idle = asyncio.create_task(client.send_silence(30))
        await client.wait_marks(2, timeout=60)  # the last answer has played
        idle.cancel()
        await client.stop()
        await client.wait_closed(timeout=5)

    wait_for_status(tw, session["session_id"], "completed")
    items = tw.get(f"/v1/sessions/{session['session_id']}/transcript").json()["items"]
    agent_items = [i for i in items if i["speaker"] == "AGENT"]
    assert (agent_items[0]["content"], agent_items[-1]["content"]) == ("Hello.", "Okay."), items
    cut_offs = agent_items[1:-1]
    assert all(i["interrupted"] for i in cut_offs) and not agent_items[-1]["interrupted"], items
    heard = [i["content"] for i in cut_offs]
    check_cut_offs(heard, heard_after)
    check_context(llm, 1, heard)


async def test_browser_call_keeps_what_the_caller_heard(server, api, llm):
    llm.script(LONG_REPLY, "Okay.")
    agent = scripted_agent(api)
    caller = WebRTCCaller(server, agent["id"], server.headers)
    try:
        await caller.connect()
        caller.mic.say(speech("What are your hours?", tail_secs=1.0))
        started = await caller.wait_for("agent.speech.started", timeout=60)
        await asyncio.sleep(max(0.0, started["_at"] + 1.0 - time.monotonic()))
        caller.mic.say(speech(BARGE_IN, lead_secs=0.0, tail_secs=1.5))
        cut_off = await caller.wait_for("transcript.agent", timeout=15)
        assert cut_off["interrupted"] is True, cut_off
        await asyncio.sleep(0.5)  # the audio already under way arrives
        # What reached the caller's speaker, rather than the clock: under load the data
        # channel's events can lag the audio by seconds.
        heard_secs = caller.loud_audio_secs
        reply = await caller.wait_for("transcript.agent", timeout=60, count=2)
        assert reply == {**reply, "text": "Okay.", "interrupted": False}
        caller.send({"type": "session.end"})
        await caller.wait_for("session.ended", timeout=15)
    finally:
        await caller.close()

    check_cut_offs([cut_off["text"]], [heard_secs], WORDS_PER_LOUD_SEC)
    check_context(llm, 1, [cut_off["text"]])
    session_id = caller.answer["session_id"]
    wait_for_status(api, session_id, "completed", timeout=30)
    items = api.get(f"/v1/sessions/{session_id}/transcript").json()["items"]
    stored = [(i["content"], i["interrupted"]) for i in items if i["speaker"] == "AGENT"]
    assert stored == [(cut_off["text"], True), ("Okay.", False)], items
