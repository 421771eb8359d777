"""Processors named in pipeline configs, each shown doing its job in a real call: the built-in
ones, and the processor `shout` and service `local_openai` from the example package
`examples/switchboard-shout`, pip-installed into a directory the server finds it in (its entry
points, read from the dist-info).

One server (with Twilio's credentials) runs the `scripted` pipeline and variants of it that
add processors."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from app.client import SessionClient
from tests.audio import rms, speech
from tests.fakes.scripted_llm import Slow, ToolCall
from tests.fakes.twilio_client import TwilioMediaStreamsClient, ulaw_decode
from tests.helpers.calls import (
    LONG_GREETING,
    agent_ws,
    transcript,
    wait_for_recording,
    wait_for_status,
    wav_samples,
)
from tests.helpers.servers import ROOT, TEST_PIPELINES, make_agent, start_server
from tests.helpers.twilio import twilio_env, twilio_session

VARIANTS = {
    "muted_greeting": {
        "after_stt": [{"name": "stt_mute", "options": {"strategies": ["first_speech"]}}]
    },
    "filler": {
        "after_llm": [
            {"name": "thinking_filler", "options": {"after_ms": 700, "text": "One moment please."}}
        ]
    },
    "redacted": {
        "after_llm": [{"name": "pii_redactor", "options": {"entities": ["phone", "email", "card"]}}]
    },
    "denoised": {"before_stt": [{"name": "noise_filter"}]},
    "ambience": {"before_output": [{"name": "background_audio", "options": {"volume": 0.3}}]},
    "shouting": {"after_llm": [{"name": "shout", "options": {"exclaim": True}}]},
}


def install_example(target) -> None:
    """`pip install` the example processor package into `target` (from a copy: the build
    leaves files next to the sources)."""
    source = target.parent / "switchboard-shout"
    shutil.copytree(ROOT / "examples" / "switchboard-shout", source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
    )


@pytest.fixture(scope="module")
def processor_server(tmp_path_factory, scripted_llm, twilio_rest):
    base = tmp_path_factory.mktemp("processors")
    plugins = base / "site"
    install_example(plugins)
    configs = base / "pipelines"
    configs.mkdir()
    scripted = yaml.safe_load((TEST_PIPELINES / "scripted.yaml").read_text())
    for name, processors in VARIANTS.items():
        (configs / f"{name}.yaml").write_text(
            yaml.safe_dump({**scripted, "processors": processors})
        )
    # The shouting pipeline's LLM is the example package's service, on the scripted LLM.
    shouting = {**scripted, "processors": VARIANTS["shouting"]}
    shouting["llm"] = {
        "service": "local_openai",
        "options": {"base_url": scripted_llm.url, "model": "scripted"},
    }
    (configs / "shouting.yaml").write_text(yaml.safe_dump(shouting))
    server = start_server(
        base / "server",
        preload=["scripted"],
        env={
            **twilio_env(scripted_llm, twilio_rest),
            "SWITCHBOARD_PIPELINES_PATH": json.dumps([str(TEST_PIPELINES), str(configs)]),
            "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
        },
    )
    yield server
    server.stop()


@pytest.fixture
def papi(processor_server):
    with processor_server.client() as client:
        yield client


async def ask(client: SessionClient, text: str, reply_number: int) -> dict:
    await client.send_event({"type": "input.text", "text": text})
    return await client.wait_for("transcript.agent", timeout=60, count=reply_number)


async def end(client: SessionClient) -> None:
    await client.send_event({"type": "session.end"})
    await client.wait_for("session.ended", timeout=10)


async def test_an_installed_package_s_processor_and_service_run_in_a_call(
    processor_server, papi, llm
):
    listed = {p["name"]: p for p in papi.get("/v1/pipelines").json()}
    assert listed["shouting"]["error"] is None
    schema = papi.get("/v1/pipelines/schema").json()
    names = [
        c["properties"]["name"]["const"]
        for c in schema["properties"]["processors"]["properties"]["after_llm"]["items"]["oneOf"]
    ]
    assert "shout" in names and "thinking_filler" in names

    llm.script("We open at nine. See you soon.", "We open at nine. See you soon.")
    for pipeline, expected in (
        ("scripted", "We open at nine. See you soon."),
        ("shouting", "WE OPEN AT NINE! SEE YOU SOON!"),
    ):
        agent = make_agent(papi, pipeline=pipeline)
        async with SessionClient(agent_ws(processor_server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=30)
            reply = await ask(client, "When do you open?", 1)
            await client.wait_for("agent.speech.stopped", timeout=30)
            assert rms(bytes(client.agent_audio)) > 300  # the shouted words were spoken
            await end(client)
        assert reply["text"] == expected
        assert [
            t["content"] for t in transcript(papi, ready["session_id"]) if t["speaker"] == "AGENT"
        ] == [expected]


async def test_stt_mute_opens_no_turn_while_the_greeting_plays(processor_server, papi, llm):
    """The caller talks over the greeting: unmuted, that interrupts it and is answered; with
    `stt_mute` (first_speech) it opens no turn, and once the greeting is over speech does."""
    heard = {}
    for pipeline in ("scripted", "muted_greeting"):
        llm.script("We open at nine.", "We open at nine.")
        agent = make_agent(papi, pipeline=pipeline, greeting=LONG_GREETING)
        async with SessionClient(agent_ws(processor_server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=30)
            await client.wait_for("agent.speech.started", timeout=30)
            await asyncio.sleep(1.0)
            await client.stream(speech("What time do you open tomorrow?", tail_secs=1.5))
            greeting = await client.wait_for("transcript.agent", timeout=60)
            heard[pipeline] = {
                "interrupted": greeting["interrupted"],
                "caller_heard": bool(client.of_type("input.speech.started")),
            }
            if pipeline == "muted_greeting":
                await client.wait_for("agent.speech.stopped", timeout=60)
                await client.stream(speech("What time do you open tomorrow?", tail_secs=1.5))
                await client.wait_for("input.speech.started", timeout=30)
                await client.wait_for("transcript.agent", timeout=60, count=2)
            await end(client)
        heard[pipeline]["entries"] = [t["speaker"] for t in transcript(papi, ready["session_id"])]
    assert heard["scripted"]["interrupted"] and heard["scripted"]["caller_heard"], heard
    assert not heard["muted_greeting"]["interrupted"], heard
    assert not heard["muted_greeting"]["caller_heard"], heard
    # The words said over the greeting never became a turn; the ones after it did.
    assert heard["muted_greeting"]["entries"] == ["AGENT", "USER", "AGENT"], heard


ORDER_TOOL = {
    "name": "lookup_order",
    "description": "Find an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
}


async def test_thinking_filler_speaks_once_while_the_llm_or_a_tool_is_slow(
    processor_server, papi, llm
):
    """A slow LLM, a fast one, then a slow tool (a client tool answered after 2.5 s): the
    filler is said once in each slow reply, before its words, and never in the fast one."""
    agent = make_agent(papi, pipeline="filler", tools=[ORDER_TOOL])
    llm.script(
        Slow(3.0, "We open at nine."),
        "We close at five.",
        ToolCall("lookup_order", {"order_id": "A1"}),
        "Your order ships today.",
    )
    async with SessionClient(agent_ws(processor_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        asked = time.monotonic()
        await client.send_event({"type": "input.text", "text": "When do you open?"})
        filler = await client.wait_for("agent.speech.started", timeout=30)
        slow = await client.wait_for("transcript.agent", timeout=60)
        await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        fast = await ask(client, "And when do you close?", 2)
        await client.wait_for("agent.speech.stopped", timeout=30, count=3)
        await client.send_event({"type": "input.text", "text": "Where is my order A1?"})
        call = await client.wait_for("tool.call", timeout=30)
        filler_in_tool = await client.wait_for("agent.speech.started", timeout=10, count=4)
        await asyncio.sleep(max(0.0, call["_at"] + 2.5 - time.monotonic()))
        await client.send_event(
            {"type": "tool.result", "call_id": call["call_id"], "result": {"status": "shipping"}}
        )
        tool_reply = await client.wait_for("transcript.agent", timeout=60, count=4)
        await client.wait_for("agent.speech.stopped", timeout=30, count=5)
        await end(client)
    # Each filler was spoken before the slow words existed (3 s; the tool's 2.5 s).
    assert filler["_at"] - asked < 3.0
    assert filler_in_tool["_at"] - call["_at"] < 2.5
    assert slow["text"] == "One moment please. We open at nine."
    assert fast["text"] == "We close at five."
    assert tool_reply["text"] == "Your order ships today."
    assert len(client.of_type("agent.speech.started")) == 5  # 2 + 1 + 2
    agent_turns = [
        t["content"] for t in transcript(papi, ready["session_id"]) if t["speaker"] == "AGENT"
    ]
    # The tool call closed the agent's turn: the filler said during it is a turn of its own.
    assert agent_turns == [slow["text"], fast["text"], "One moment please.", tool_reply["text"]]


async def test_pii_is_redacted_from_what_is_stored_but_not_from_the_llm(
    processor_server, papi, llm, webhook_receiver
):
    said = "My card is 4111 1111 1111 1111 and my email is jane.doe@example.com."
    reply = "Thanks, we will call you back on 415 555 0132."
    agent = make_agent(
        papi,
        pipeline="redacted",
        webhook_url=webhook_receiver.url("/pii"),
        webhook_events=["transcript.updated"],
    )
    llm.script(reply)
    async with SessionClient(agent_ws(processor_server, agent["id"])) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        live = await ask(client, said, 1)
        await end(client)
    session_id = ready["session_id"]
    # The live conversation had the real text: the LLM was asked with it, the client heard it.
    assert said in json.dumps(llm.requests[-1]["messages"])
    assert live["text"] == reply
    stored = [(t["speaker"], t["content"]) for t in transcript(papi, session_id)]
    assert stored == [
        ("USER", "My card is [CARD] and my email is [EMAIL]."),
        ("AGENT", "Thanks, we will call you back on [PHONE]."),
    ]
    deadline = time.monotonic() + 15
    while len(webhook_receiver.events("/pii")) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    hooks = [json.loads(r["body"])["data"]["content"] for r in webhook_receiver.events("/pii")]
    assert hooks == [content for _, content in stored]
    wait_for_status(papi, session_id, "completed")
    deadline = time.monotonic() + 30
    while not any("[CARD]" in json.dumps(r) for r in llm.oneshot_requests):
        assert time.monotonic() < deadline, "no analysis request"
        await asyncio.sleep(0.2)
    analysed = json.dumps(
        [r["messages"] for r in llm.oneshot_requests if "[CARD]" in json.dumps(r)]
    )
    assert "4111" not in analysed and "jane.doe" not in analysed and "555 0132" not in analysed


def noise(seconds: float, level: float, seed: int = 7) -> np.ndarray:
    """Steady fan-like noise (low-passed white noise) at RMS `level`, 16 kHz."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(16000 * seconds))
    kernel = np.ones(8) / 8
    shaped = np.convolve(white, kernel, mode="same")
    return shaped * level / np.sqrt(np.mean(shaped**2))


NOISE_RMS = 2500


def pcm(samples: np.ndarray) -> bytes:
    return np.clip(samples, -32768, 32767).astype(np.int16).tobytes()


def with_noise(voice: bytes, level: float) -> bytes:
    samples = np.frombuffer(voice, dtype=np.int16).astype(np.float64)
    return pcm(samples + noise(len(samples) / 16000, level)[: len(samples)])


async def test_noise_filter_hears_speech_through_noise_and_no_turn_in_noise_alone(
    processor_server, papi, llm
):
    """Fan noise, then a question said over it: the noise opens no turn and the question is
    heard; the recording's caller track (the audio after the input transport) shows the noise
    taken out, against the same noise on the plain pipeline."""
    noise_level = {}
    for pipeline in ("scripted", "denoised"):
        agent = make_agent(papi, pipeline=pipeline, greeting="")
        llm.script("We open at nine.")
        async with SessionClient(agent_ws(processor_server, agent["id"])) as client:
            ready = await client.wait_for("session.ready", timeout=30)
            await client.stream(pcm(noise(3.0, NOISE_RMS)))
            await asyncio.sleep(1.0)
            if pipeline == "denoised":
                assert not client.of_type("input.speech.started")
                question = speech("What time do you open on Monday?", lead_secs=0.5, tail_secs=1.5)
                await client.stream(with_noise(question, NOISE_RMS))
                said = await client.wait_for("transcript.user", timeout=60)
                await client.wait_for("transcript.agent", timeout=60)
            await end(client)
        session_id = ready["session_id"]
        wait_for_recording(papi, session_id, "available")
        caller = wav_samples(papi.get(f"/v1/sessions/{session_id}/recording").content)[:, 0]
        noise_level[pipeline] = rms(caller[int(0.5 * 16000) : int(2.5 * 16000)].tobytes())
    # Heard as a question about opening (Whisper tiny sometimes mishears "time" or "Monday" over
    # the filtered noise; without the filter the noise opens turns of its own).
    assert {"what", "open"} <= set(said["text"].lower().rstrip("?.").split()), said
    assert [t["speaker"] for t in transcript(papi, session_id)] == ["USER", "AGENT"]
    assert noise_level["scripted"] > 0.7 * NOISE_RMS, noise_level
    assert noise_level["denoised"] < 0.2 * noise_level["scripted"], noise_level


async def test_background_audio_plays_under_the_agent_between_replies(processor_server, papi, llm):
    """Two seconds after the greeting: a plain call sends nothing; with background audio, a
    soft, steady room tone, at whatever rate the client asked for."""
    quiet = {}
    for pipeline, rate in (("scripted", 16000), ("ambience", 16000), ("ambience", 8000)):
        agent = make_agent(papi, pipeline=pipeline, greeting="Hello there.")
        url = agent_ws(processor_server, agent["id"], sample_rate=rate)
        async with SessionClient(url, sample_rate=rate) as client:
            await client.wait_for("session.ready", timeout=30)
            await client.wait_for("agent.speech.stopped", timeout=30)
            await asyncio.sleep(0.5)
            before = len(client.agent_audio)
            await asyncio.sleep(2.0)
            quiet[pipeline, rate] = bytes(client.agent_audio[before:])
            await end(client)
    assert len(quiet["scripted", 16000]) == 0
    for rate in (16000, 8000):
        ambience = quiet["ambience", rate]
        assert 1.5 < len(ambience) / 2 / rate < 2.5, (rate, len(ambience))
        assert 150 < rms(ambience) < 1000, (rate, rms(ambience))


async def test_background_audio_plays_on_a_phone_call(processor_server, papi, llm):
    agent = make_agent(papi, pipeline="ambience", greeting="Hello there.")
    twiml, session = twilio_session(papi, agent["id"])
    async with TwilioMediaStreamsClient.from_twiml(twiml) as client:
        await client.wait_marks(1, timeout=30)  # the greeting has played
        await asyncio.sleep(0.5)
        seen = len(client.media_log)
        await client.send_silence(2.0)
        quiet = b"".join(audio for _, audio in client.media_log[seen:])
        await client.stop()
        await client.wait_closed(timeout=5)
    wait_for_status(papi, session["session_id"], "completed")
    # μ-law at 8 kHz: one byte a sample.
    assert 1.5 < len(quiet) / 8000 < 2.5, len(quiet)
    assert 150 < rms(ulaw_decode(quiet)) < 1000, rms(ulaw_decode(quiet))
