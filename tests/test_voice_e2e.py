"""End to end over a real WebSocket with real audio: speech in, speech out, barge-in, deletion."""

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.utils.context.llm_context_summarization import LLMContextSummarizationUtil

from app.client import SessionClient
from pipelines import local_llm, services
from pipelines.config import PipelineCatalog
from processors.context_summarizer import fit_request, summarize_older_turns
from tests.audio import rms, speech
from tests.helpers.calls import agent_ws, wait_for_status
from tests.helpers.servers import free_port, make_agent, start_server


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


async def test_the_local_llm_s_summary_keeps_a_long_conversation_inside_its_context(server):
    """`local`'s summary of a conversation that has just passed its `summarize_after_tokens` fits
    the model's 2048-token slot, and leaves room: three turns later the whole conversation is
    refused by the server, while the one with the summary in place of its older turns is answered.
    (`ContextSummarizer` does this in a call; tests/test_session_websocket.py shows it there.)"""
    stage = PipelineCatalog().get("local").llm
    assert stage is not None and stage.summarize_after_tokens == 1000
    llm = services.create(
        stage,
        services.ServiceContext(
            system_prompt="You are a helpful receptionist.", voice_id="", language="en"
        ),
    )
    story = (
        "My order arrived late and the box was damaged, so I would like to know what you can do "
        "about it and whether the delivery fee can be refunded to my card. "
    )

    def exchange(turn: int) -> list:  # about 300 tokens from the caller, a short reply
        return [
            {"role": "user", "content": f"Turn {turn}. " + story * 8},
            {"role": "assistant", "content": "I am sorry to hear that, let me check your order."},
        ]

    messages = [m for turn in range(1, 5) for m in exchange(turn)][:-1]  # ends on turn 4
    context = LLMContext(messages=list(messages))
    estimate = LLMContextSummarizationUtil.estimate_context_tokens(context)
    assert stage.summarize_after_tokens <= estimate < 2048  # a summary starts at this turn
    for _ in range(3):  # a sampled summary can come back empty: a call tries again next turn
        replaced = await summarize_older_turns(llm, context, stage.summarize_after_tokens)
        if replaced:
            break
    assert replaced == len(messages) - 2
    summary = context.get_messages()[0]["content"]
    assert summary.startswith("Conversation summary: ") and len(summary) > 40, summary

    later = exchange(4)[1:] + [m for turn in range(5, 8) for m in exchange(turn)][:-1]
    whole = LLMContext(messages=messages + later)
    with pytest.raises(openai.BadRequestError, match="exceeds the available context size"):
        await llm.run_inference(whole, max_tokens=20)
    context.add_messages(later)
    await llm.run_inference(context, max_tokens=20)  # answered: the server refuses no more
    # What a call sends while its summary is still being written: answered, with room to reply.
    assert stage.max_request_tokens is not None
    fitted = fit_request(whole, stage.max_request_tokens)
    assert fitted.get_messages()[-1] == whole.get_messages()[-1]
    await llm.run_inference(fitted, max_tokens=stage.options["max_tokens"])


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


async def test_the_local_llm_generates_simultaneous_calls_replies_together(server):
    """Calls ask the local llama.cpp server at once: each reply streams to its end, and a call
    that asks while another's reply is being written starts hearing its own before that one
    ends (parallel slots, not a queue)."""
    llm = PipelineCatalog().get("local").llm
    assert llm is not None and llm.local_server is not None
    url, model = f"{llm.options['base_url']}/chat/completions", llm.options["model"]

    async def reply(question: str, max_tokens: int) -> tuple[str, str | None, float, float]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "max_tokens": max_tokens,
            "ignore_eos": True,  # llama.cpp's: the long reply really is long
        }
        text, finish, first, last = "", None, 0.0, 0.0
        async with httpx.AsyncClient(timeout=120) as http, http.stream("POST", url, json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"][0]
                    if choice["delta"].get("content"):
                        text += choice["delta"]["content"]
                        first, last = first or time.monotonic(), time.monotonic()
                    finish = choice.get("finish_reason") or finish
        return text, finish, first, last

    long = asyncio.create_task(reply("Tell me about the history of tea.", 120))
    await asyncio.sleep(0.3)  # the long reply is streaming when the other questions arrive
    others = asyncio.gather(
        *(
            reply(question, 20)
            for question in ("What time do you open?", "Do you deliver?", "Can I book a table?")
        )
    )
    replies = [await long, *await others]
    for text, finish, _, _ in replies:
        assert text.strip() and finish == "length", (text, finish)
    long_ends = replies[0][3]
    assert all(first < long_ends for _, _, first, _ in replies[1:]), [r[1:] for r in replies]


async def test_the_local_llm_keeps_its_connection_open_after_a_streamed_reply(server):
    """A client sends its next request on the kept-alive connection of a streamed reply (as the
    OpenAI client's pool does): the server answers it (unpatched, it hung up after each stream)."""
    llm = PipelineCatalog().get("local").llm
    assert llm is not None and llm.local_server is not None
    body = json.dumps(
        {
            "model": llm.options["model"],
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": True,
            "max_tokens": 5,
        }
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", llm.local_server.port)
    try:
        for _ in range(3):
            writer.write(request)
            response = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 60)
            assert response.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in response
    finally:
        writer.close()


def test_two_servers_starting_the_local_llm_at_once_share_one():
    """Two `switchboard serve` on one machine start the local LLM server at the same moment:
    one of them runs it, the other waits for it and uses it (it used to fail to start)."""
    llm = PipelineCatalog().get("local").llm
    assert llm is not None and llm.local_server is not None
    config = llm.local_server.model_copy(update={"port": free_port(), "parallel": 1})
    # The pool's threads outlive the checks: Linux ends a child when the thread that started it
    # ends (PR_SET_PDEATHSIG).
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda _: local_llm.start(config, "race"), range(2)))
        try:
            assert sum(process is not None for process in started) == 1, started
            assert local_llm.is_serving(config.port)
        finally:
            for process in started:
                local_llm.stop(process)


@pytest.mark.storage_free
def test_a_server_starts_the_local_llm_again_once_the_one_it_shared_is_gone(tmp_path):
    """Two `switchboard serve` on one machine share its local LLM server (a restart on the
    same machine, say). When the one that started it exits, taking it along, the other
    starts it again within seconds, and stops it when it exits itself."""
    port = free_port()
    env = {"SWITCHBOARD_LOCAL_LLM_PORT": str(port)}
    first = start_server(tmp_path / "first", preload=["local"], env=env)
    try:
        second = start_server(tmp_path / "second", preload=["local"], env=env)
    finally:
        first.stop()
    try:
        assert "already running on port" in second.log()
        deadline = time.monotonic() + 60
        while not local_llm.is_serving(port):
            assert time.monotonic() < deadline, second.log()[-3000:]
            time.sleep(0.5)
        assert f"Local LLM server on port {port} is gone" in second.log()
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
    finally:
        second.stop()
    deadline = time.monotonic() + 15
    while local_llm.is_serving(port):
        assert time.monotonic() < deadline, "the restarted local LLM server outlived its serve"
        time.sleep(0.5)
