"""End to end over a real WebSocket with real audio: speech in, speech out, barge-in, deletion."""

import asyncio
import json
import time

import httpx

from app.client import SessionClient
from pipelines.config import PipelineCatalog
from tests.audio import rms, speech
from tests.helpers.calls import agent_ws, wait_for_status
from tests.helpers.servers import make_agent


async def test_local_pipeline_hears_the_caller_and_answers(server, api):
    agent = make_agent(
        api,
        system_prompt="You are the receptionist of a dental clinic. Answer in one short sentence.",
        greeting="Hello, thanks for calling the clinic.",
    )
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        greeting = await client.wait_for("transcript.agent", timeout=30)
        assert greeting["text"] == "Hello, thanks for calling the clinic."
        await client.wait_for("agent.speech.stopped", timeout=30)
        greeting_audio = len(client.agent_audio)
        assert greeting_audio > 16000 * 2 * 1.0  # over a second of speech

        await client.stream(speech("What time do you open tomorrow morning?"))
        await client.stream_silence(1.0)
        heard = await client.wait_for("transcript.user", timeout=30)
        reply = await client.wait_for("transcript.agent", timeout=60, count=2)
        await client.wait_for("agent.speech.stopped", timeout=60, count=2)
        assert reply["text"].strip()
        reply_audio = bytes(client.agent_audio[greeting_audio:])
        assert len(reply_audio) > 16000 * 2 * 0.3 and rms(reply_audio) > 300

        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)

    words = heard["text"].lower()
    assert "open" in words and "tomorrow" in words, heard
    session = wait_for_status(api, ready["session_id"], "completed")
    assert session["end_reason"] == "caller_hangup"
    transcript = api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
    speakers = [t["speaker"] for t in transcript]
    assert speakers[0] == "AGENT" and "USER" in speakers and speakers[-1] == "AGENT"
    user_text = " ".join(t["content"] for t in transcript if t["speaker"] == "USER").lower()
    assert "open" in user_text and "tomorrow" in user_text
    assert transcript[-1]["content"] == reply["text"]


async def test_barge_in_stops_the_agent_and_tells_the_client(server, api, llm):
    long_answer = (
        "Let me tell you everything about our opening hours. On Monday we open at eight in the morning "
        "and close at six in the evening. On Tuesday we open at nine and close at seven. On Wednesday "
        "we open at eight and close at five. On Thursday we open late, at ten, and close at eight."
    )
    llm.script(long_answer, "Sure, go ahead.")
    agent = make_agent(api, pipeline="scripted")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.send_event({"type": "input.text", "text": "What are your hours?"})
        await client.wait_for("agent.speech.started", timeout=30)
        await asyncio.sleep(1.5)  # the agent is mid-sentence
        assert not client.of_type("agent.speech.stopped")
        speaking_since = time.monotonic()
        barge = asyncio.create_task(
            client.stream(speech("Wait, stop, I have a question.", tail_secs=1.0))
        )
        started = await client.wait_for("input.speech.started", timeout=10)
        stop_latency = started["_at"] - speaking_since
        await client.wait_for("agent.speech.stopped", timeout=10)
        await barge
        interrupted = await client.wait_for("transcript.agent", timeout=10)
        assert interrupted["interrupted"] is True
        assert interrupted["text"] != long_answer  # cut short
        # No audio of the long answer arrives once the caller has barged in. The next reply's
        # first frame may land just before its `agent.speech.started`, hence the margin.
        next_reply = [e["_at"] for e in client.of_type("agent.speech.started")[1:]]
        window_end = next_reply[0] - 0.1 if next_reply else started["_at"] + 2.0
        late_audio = sum(
            size for at, size in client.audio_log if started["_at"] + 0.5 < at < window_end
        )
        assert late_audio == 0, late_audio
        assert stop_latency < 3.0
        await client.send_event({"type": "session.end"})
    transcript = api.get(f"/v1/sessions/{ready['session_id']}/transcript").json()["items"]
    assert any(t["speaker"] == "AGENT" and t["interrupted"] for t in transcript)
    stops = wait_for_status(api, ready["session_id"], "completed")["latency"]["interruptions"]
    assert stops and 0 < stops[0]["stop_secs"] < 3


async def test_deleting_the_agent_ends_its_live_session(server, api, llm):
    agent = make_agent(api, pipeline="scripted", greeting="Hi, how can I help?")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.started", timeout=30)
        assert api.delete(f"/v1/agents/{agent['id']}").status_code == 200
        ended = await client.wait_for("session.ended", timeout=10)
        assert ended["reason"] == "agent_deleted"
        deadline = time.monotonic() + 5
        while not client.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert client.closed
    session = wait_for_status(api, ready["session_id"], "completed")
    assert session["end_reason"] == "agent_deleted"


async def test_latency_is_measured_per_call_and_exported(server, api, llm):
    llm.script("It is a sunny day.", "Sure.")
    agent = make_agent(api, pipeline="scripted", greeting="Hello there.")
    async with SessionClient(agent_ws(server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        await client.stream(speech("How is the weather today?"))
        await client.stream_silence(1.0)
        await client.wait_for("agent.speech.stopped", timeout=60, count=2)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    session = wait_for_status(api, ready["session_id"], "completed")
    latency = session["latency"]
    assert 0 < latency["greeting_secs"] < 5
    turn = latency["turns"][0]
    assert 0 < turn["voice_to_voice_secs"] < 10
    assert latency["voice_to_voice_p50_secs"] == turn["voice_to_voice_secs"]
    assert {"transcription", "llm_inference", "speech_synthesis"} & set(turn["parts"])
    metrics = httpx.get(server.url + "/metrics").text
    assert "switchboard_voice_to_voice_seconds_count" in metrics
    assert 'switchboard_sessions_ended_total{end_reason="caller_hangup"}' in metrics
    assert "switchboard_active_sessions" in metrics


async def test_the_local_llm_streams_simultaneous_calls_replies_whole(server):
    """Two calls ask the local llama.cpp server at once: each reply streams to its end (by
    default that server cuts a streaming reply off the moment another request arrives)."""
    llm = PipelineCatalog().get("local").llm
    assert llm is not None
    url, model = f"{llm.options['base_url']}/chat/completions", llm.options["model"]

    async def reply(question: str) -> tuple[str, str | None]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "max_tokens": 30,
        }
        text, finish = "", None
        async with httpx.AsyncClient(timeout=120) as http, http.stream("POST", url, json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"][0]
                    text += choice["delta"].get("content") or ""
                    finish = choice.get("finish_reason") or finish
        return text, finish

    first = asyncio.create_task(reply("Tell me about the history of tea."))
    await asyncio.sleep(0.3)  # the first reply is streaming when the second question arrives
    second = await reply("What time do you open tomorrow?")
    for text, finish in (await first, second):
        assert text.strip() and finish in ("stop", "length"), (text, finish)
