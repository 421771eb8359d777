"""Turn-taking end to end on the `instant` benchmark pipeline (real Silero VAD and Smart Turn,
canned STT and TTS): a finished question is answered on Smart Turn's word, without
waiting out the silence fallback, and a caller who pauses mid-sentence is not cut off.
"""

import asyncio
import time

import httpx
import pytest

from benchmarks.common import BENCH_PIPELINES, is_speech, twilio_caller
from pipelines.endpointing import POLICIES
from tests.audio import rms, speech
from tests.helpers.servers import make_agent, start_server


@pytest.fixture(scope="module")
def instant_server(tmp_path_factory, scripted_llm):
    server = start_server(
        tmp_path_factory.mktemp("turns"),
        preload=["instant"],
        env={
            "SWITCHBOARD_PIPELINES_PATH": f'["{BENCH_PIPELINES}"]',
            "SCRIPTED_LLM_URL": scripted_llm.url,
        },
    )
    yield server
    server.stop()


@pytest.fixture
def instant_api(instant_server):
    with instant_server.client() as client:
        yield client


def without_pauses(pcm: bytes, longest_secs: float = 0.1, sample_rate: int = 8000) -> bytes:
    """`pcm` with each quiet stretch between words cut to `longest_secs` (20 ms frames)."""
    frame = sample_rate // 50
    frames = [pcm[i : i + 2 * frame] for i in range(0, len(pcm), 2 * frame)]
    loudest = max(rms(f) for f in frames)
    kept, quiet = [], 0
    for f in frames:
        quiet = quiet + 1 if rms(f) < loudest * 0.03 else 0
        if quiet * 0.02 <= longest_secs:
            kept.append(f)
    return b"".join(kept)


def agent_speech(client, since: float) -> list[float]:
    return [at for at, payload in client.media_log if at > since and is_speech(payload)]


async def call(server, agent_id: str, pcm: bytes, listen_secs: float):
    """Dial, wait out the greeting (its audio is all sent once the mark behind it arrives),
    say `pcm` then keep quiet; returns the caller and when its audio started."""
    client = twilio_caller(server, agent_id)
    await client.open()
    await client.wait_until(lambda: "utterance-1" in client.marks_received, 30, "greeting")
    await client.wait_until(
        lambda: time.monotonic() - agent_speech(client, 0)[-1] > 0.8, 30, "greeting over"
    )
    started = time.monotonic()
    await client.send_audio(pcm)
    await client.send_silence(listen_secs)
    return client, started


async def test_a_finished_question_is_answered_before_the_silence_fallback(
    instant_server, instant_api, llm
):
    """Smart Turn's first look at "Are you open tonight?" (0.2 s after it) often says "not
    yet"; asked again as the silence grows it agrees, well before the `patient` fallback."""
    llm.script("Yes, until ten.")
    agent = make_agent(
        instant_api, pipeline="instant", voice_id="tone", greeting="Hello.", endpointing="patient"
    )
    assert agent["endpointing"] == "patient"
    question = speech("Are you open tonight?", sample_rate=8000)
    client, started = await call(instant_server, agent["id"], question, listen_secs=4)
    try:
        said_until = started + len(question) / 2 / 8000
        answer = agent_speech(client, said_until - 0.5)
        assert answer, "the question was not answered"
        assert answer[0] - said_until < POLICIES["patient"].max_silence_secs
        assert len(llm.requests) == 1
    finally:
        await client.close()


async def test_a_pause_mid_sentence_gets_one_answer_after_the_continuation(
    instant_server, instant_api, llm
):
    """Smart Turn hears "my number is five five five, um" as unfinished (0.01); a `patient`
    agent's silence fallback (2.5 s) is well past the caller's pause (0.7 s, and the VAD's
    own start and stop), so the number is answered once, whole. (Piper's 0.34 s pause at the
    comma is cut to 0.1 s: there the VAD would stop, and Smart Turn, which calls "my number
    is five five five" finished, end the turn whenever a busy server had not yet seen the
    "um" begin.)"""
    llm.script("Thanks, I have it.")
    agent = make_agent(
        instant_api, pipeline="instant", voice_id="tone", greeting="Hello.", endpointing="patient"
    )
    start = without_pauses(speech("My number is five five five, um", sample_rate=8000))
    start += b"\x00\x00" * int(0.7 * 8000)
    rest = speech("one two three four.", sample_rate=8000)
    client, started = await call(instant_server, agent["id"], start + rest, listen_secs=3)
    try:
        continued_at = started + len(start) / 2 / 8000
        answer = agent_speech(client, started)
        assert answer, "the finished sentence was not answered"
        assert answer[0] > continued_at, (
            f"the agent answered {answer[0] - started:.2f} s into the caller's audio, during the"
            f" pause ({continued_at - started:.2f} s); LLM requests: {len(llm.requests)}"
        )
        await asyncio.sleep(1)  # the turn's transcript entries are written as it ends
        async with httpx.AsyncClient(headers=instant_server.headers) as http:
            url = f"{instant_server.url}/v1/sessions/{client.session_id}/transcript"
            items = (await http.get(url)).json()["items"]
        assert [item["speaker"] for item in items].count("USER") == 1, items
    finally:
        await client.close()


def test_an_agent_s_endpointing_is_one_of_three_or_the_pipeline_s(instant_api):
    bad = instant_api.post(
        "/v1/agents",
        json={
            "name": "A",
            "voice_id": "tone",
            "system_prompt": "x",
            "pipeline": "instant",
            "endpointing": "sometimes",
        },
    )
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"
    agent = make_agent(instant_api, pipeline="instant", voice_id="tone", endpointing="fast")
    assert agent["endpointing"] == "fast"
    updated = instant_api.patch(f"/v1/agents/{agent['id']}", json={"endpointing": None})
    assert updated.status_code == 200 and updated.json()["endpointing"] is None
    assert instant_api.get(f"/v1/agents/{agent['id']}").json()["endpointing"] is None
