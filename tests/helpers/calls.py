"""Starting, joining and waiting on calls over the direct session protocol."""

import asyncio
import io
import time
import wave

import numpy as np

from app.client import SessionClient
from tests.audio import speech

LONG_GREETING = (
    "Hello and welcome to the clinic. Before we start, let me read you our opening hours. "
    "On Monday we open at eight in the morning and close at six in the evening. On Tuesday "
    "we open at nine and close at seven. On Wednesday we open at eight and close at five."
)


def agent_ws(server, agent_id: str, key: str | None = None, **query) -> str:
    params = "&".join(f"{k}={v}" for k, v in {"api_key": key or server.api_key, **query}.items())
    return server.ws_url(f"/v1/agents/{agent_id}/session?{params}")


async def refused(url: str) -> SessionClient:
    """A client that connected to `url`, got its `session.error` and saw the socket close."""
    client = SessionClient(url)
    async with client:
        await client.wait_for("session.error", timeout=10)
        deadline = time.monotonic() + 5
        while not client.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    return client


async def spoken_call(server, agent: dict, *questions: str, key: str | None = None) -> str:
    """A call in which the caller speaks each question once the agent has stopped (so each is
    a measured turn), then hangs up; returns the session id."""
    async with SessionClient(agent_ws(server, agent["id"], key)) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        await client.wait_for("agent.speech.stopped", timeout=30)
        for count, question in enumerate(questions, start=2):
            await client.stream(speech(question))
            await client.stream_silence(1.0)
            await client.wait_for("agent.speech.stopped", timeout=60, count=count)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    return ready["session_id"]


async def agent_finished(client: SessionClient, replies: int, timeout: float = 60) -> None:
    """Wait until the agent has given its `replies`th reply and its speech has stopped for good:
    on a busy machine a reply's clauses can reach the caller with a pause between them, each
    pause its own `agent.speech.stopped`."""
    await client.wait_for("transcript.agent", timeout=timeout, count=replies)
    deadline = time.monotonic() + timeout
    quiet_since = None
    while quiet_since is None or time.monotonic() - quiet_since < 0.5:
        started = len(client.of_type("agent.speech.started"))
        quiet = started > 0 and len(client.of_type("agent.speech.stopped")) >= started
        quiet_since = (quiet_since or time.monotonic()) if quiet else None
        assert time.monotonic() < deadline, f"the agent still speaking after {timeout}s"
        await asyncio.sleep(0.05)


async def ask(client: SessionClient, question: str, replies: int = 1) -> None:
    """Say `question` and wait until the agent's answer (the `replies`th) has played."""
    await client.stream(speech(question, tail_secs=1.0))
    await agent_finished(client, replies)


async def end(client: SessionClient) -> None:
    """End the call from the client and wait until the server says it has ended."""
    await client.send_event({"type": "session.end"})
    await client.wait_for("session.ended", timeout=10)


async def typed_spoken_typed(client: SessionClient) -> None:
    """A caller-first call of three turns: typed, spoken, typed (each answered in turn), then
    ended. The speech-to-speech tests check what their provider was sent."""
    await client.send_event({"type": "input.text", "text": "Are you open on Sunday?"})
    await client.wait_for("agent.speech.stopped", timeout=30)
    await ask(client, "When do you open on Monday?", replies=2)
    await client.send_event({"type": "input.text", "text": "Can I pay by card?"})
    await client.wait_for("transcript.agent", timeout=30, count=3)
    await client.wait_for("agent.speech.stopped", timeout=30, count=3)
    await end(client)


def inline_call(api, **fields) -> dict:
    """An inline call over the direct WebSocket, as POST /v1/calls/inline returns it."""
    body = {
        "systemPrompt": "You are a helpful receptionist. Answer in one short sentence.",
        "voice": "joe",
        "language": "en",
        "greeting": "Hello, thanks for calling.",
        "pipeline": "scripted",
        "connectionType": "websocket",
        **fields,
    }
    response = api.post("/v1/calls/inline", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def transcript(api, session_id: str) -> list[dict]:
    return api.get(f"/v1/sessions/{session_id}/transcript").json()["items"]


def wait_for_status(api, session_id: str, status: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        session = api.get(f"/v1/sessions/{session_id}").json()
        if session["status"] == status or time.monotonic() > deadline:
            assert session["status"] == status, session
            return session
        time.sleep(0.1)


def wait_resumable(api, session_id: str, timeout: float = 10) -> dict:
    """The session once its client has dropped and it waits for a reconnect."""
    deadline = time.monotonic() + timeout
    while True:
        session = api.get(f"/v1/sessions/{session_id}").json()
        if session["resumable_until"] or time.monotonic() > deadline:
            assert session["resumable_until"], session
            return session
        time.sleep(0.05)


def wait_for_cost(api, session_id: str, timeout: float = 15) -> dict:
    """The ended session once its cost is stored (just after its status)."""
    deadline = time.monotonic() + timeout
    while True:
        session = api.get(f"/v1/sessions/{session_id}").json()
        if session.get("cost") or time.monotonic() > deadline:
            assert session.get("cost"), session
            return session
        time.sleep(0.1)


MINIMAL_OFFER = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
"""The smallest SDP offer the WebRTC route parses: no media section."""
AUDIO_OFFER = MINIMAL_OFFER + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
"""An SDP offer with an audio section and no ICE: enough to be admitted, never connects."""


def wait_for_recording(api, session_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        session = api.get(f"/v1/sessions/{session_id}").json()
        recording = session["recording"]
        if (recording and recording["status"] == status) or time.monotonic() > deadline:
            assert recording and recording["status"] == status, session
            return recording
        time.sleep(0.2)


def wav_samples(content: bytes) -> np.ndarray:
    """A stereo 16-bit WAV's samples, (frames, 2)."""
    with wave.open(io.BytesIO(content)) as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2 and wav.getnframes() > 0
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
