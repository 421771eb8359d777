"""The eval caller's ways in: the session WebSocket (`SessionCaller`) and a Twilio Media Streams
call (`TwilioCaller`), each speaking Piper speech (or, on the WebSocket, `input.text`) and
collecting the agent's audio turn by turn."""

import asyncio
import audioop
import base64
import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode
from xml.etree import ElementTree

import httpx
import websockets

from app.client import SessionClient
from app.evals import speech

SETTLE_SECS = 0.6
"""Quiet after the agent's audio before its reply counts as finished (it may go on after a tool)."""
TWILIO_RATE = 8000


@dataclass
class Reply:
    """What the agent sent back in one turn."""

    audio: bytes
    latency: float | None
    """Seconds from the end of the caller's input to the agent's first audio (None: it said nothing)."""
    ended: bool
    """The call ended during the turn."""
    text: str = ""
    """The agent's words as the session protocol sent them (`transcript.agent`; WebSocket only)."""


class Caller:
    """A caller on one eval call. `say()` then `reply()` is a turn; `reply()` alone waits for
    what the agent says unprompted (a greeting)."""

    sample_rate: int
    session_id: str
    _log: "_AudioLog"

    @property
    def ended(self) -> bool:
        """The call is over."""
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def say(self, text: str) -> None:
        raise NotImplementedError

    async def reply(self, timeout: float) -> Reply:
        """The agent's reply once it has finished (or what came of it within `timeout`)."""
        raise NotImplementedError

    async def agent_started(self, timeout: float) -> None:
        """Wait until the agent's reply to this turn starts reaching the caller."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.ended:
            if self._log.turn_started:
                return
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        raise NotImplementedError


class _AudioLog:
    """The agent's audio as it arrives, with the times, split into turns."""

    def __init__(self, pcm: bytearray | None = None, chunks: list[tuple[float, int]] | None = None):
        self.pcm = bytearray() if pcm is None else pcm
        self.chunks: list[tuple[float, int]] = [] if chunks is None else chunks
        """(arrival time, bytes) of every chunk."""
        self.turn_offset = 0
        self.turn_chunks = 0
        self.input_ended_at: float | None = None

    def add(self, pcm: bytes) -> None:
        self.pcm += pcm
        self.chunks.append((time.monotonic(), len(pcm)))

    def start_turn(self, input_ended_at: float | None = None) -> None:
        """A turn starts; `input_ended_at`, once known, is when the caller finished."""
        self.turn_offset, self.turn_chunks = len(self.pcm), len(self.chunks)
        self.input_ended_at = input_ended_at

    @property
    def turn_started(self) -> bool:
        return len(self.chunks) > self.turn_chunks

    def reply(self, ended: bool) -> Reply:
        latency = None
        if self.turn_started and self.input_ended_at is not None:
            latency = self.chunks[self.turn_chunks][0] - self.input_ended_at
        return Reply(bytes(self.pcm[self.turn_offset :]), latency, ended)

    def quiet_for(self, secs: float) -> bool:
        return not self.chunks or time.monotonic() - self.chunks[-1][0] >= secs


class SessionCaller(Caller):
    """Calls over `WS /v1/agents/{id}/session`; speech as 16 kHz PCM, or `input.text` with
    `text=True`. Client tools are answered from `tool_results` (`{"ok": true}` otherwise)."""

    def __init__(self, server: str, api_key: str, agent_id: str, *, text: bool, tool_results):
        base = server.rstrip("/").replace("http", "ws", 1)
        self.sample_rate = 16000
        url = f"{base}/v1/agents/{agent_id}/session?{urlencode({'sample_rate': self.sample_rate})}"
        self._client = SessionClient(url, self.sample_rate, headers={"X-API-Key": api_key})
        self._text = text
        self._tool_results = tool_results
        self._log = _AudioLog(self._client.agent_audio, self._client.audio_log)
        self._tasks: set[asyncio.Task] = set()
        self._agent_turns = 0
        """`transcript.agent` events before the current turn."""
        self.session_id = ""

    @property
    def ended(self) -> bool:
        return self._client.closed or bool(self._client.of_type("session.ended"))

    def _heard(self, event: dict) -> None:
        if event["type"] == "tool.call":
            result = self._tool_results.get(event["name"], {"ok": True})
            message = {"type": "tool.result", "call_id": event["call_id"], "result": result}
            task = asyncio.create_task(self._client.send_event(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def open(self) -> None:
        self._client.on_event = self._heard
        await self._client.__aenter__()
        ready = await self._client.wait_for("session.ready", timeout=30)
        self.session_id = ready["session_id"]

    async def say(self, text: str) -> None:
        if self._text:
            await self._client.send_event({"type": "input.text", "text": text})
            self._log.start_turn(time.monotonic())
            return
        pcm = await speech.speak(text, self.sample_rate)
        await self._client.stream(pcm)
        self._log.start_turn(time.monotonic())
        await self._client.stream_silence(0.5)

    async def reply(self, timeout: float) -> Reply:
        """Finished: a whole (not interrupted) `transcript.agent` since the turn began, the
        agent's speech stopped and its audio quiet for a moment."""
        deadline = time.monotonic() + timeout
        client = self._client
        while time.monotonic() < deadline and not self.ended:
            said = client.of_type("transcript.agent")[self._agent_turns :]
            whole = any(not event.get("interrupted") for event in said)
            started = len(client.of_type("agent.speech.started"))
            if whole and len(client.of_type("agent.speech.stopped")) >= started:
                if self._log.quiet_for(SETTLE_SECS):
                    break
            await asyncio.sleep(0.05)
        reply = self._log.reply(self.ended)
        said = client.of_type("transcript.agent")[self._agent_turns :]
        reply.text = " ".join(e.get("text", "") for e in said if not e.get("interrupted")).strip()
        self._agent_turns += len(said)
        self._log.start_turn()
        return reply

    async def close(self) -> None:
        if self.session_id and not self.ended:
            await self._client.send_event({"type": "session.end"})
            try:
                await self._client.wait_for("session.ended", timeout=10)
            except (TimeoutError, ConnectionError):
                pass
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.close()


class TwilioCaller(Caller):
    """Calls as Twilio does: `POST /v1/sessions/twilio` for the TwiML, then the Media Streams
    WebSocket it names (`connected`, `start`, 20 ms μ-law `media`, each `mark` echoed once the
    audio before it has played, `stop`)."""

    def __init__(self, server: str, api_key: str, agent_id: str):
        self.sample_rate = TWILIO_RATE
        self._server, self._api_key, self._agent_id = server.rstrip("/"), api_key, agent_id
        self._log = _AudioLog()
        self._marks = 0
        self._turn_marks = 0
        self._playback_end = 0.0
        self._ws: websockets.ClientConnection | None = None
        self._tasks: list[asyncio.Task] = []
        self._stream_sid = ""
        self._sequence = 0
        self.session_id = ""
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    async def open(self) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"{self._server}/v1/sessions/twilio",
                json={"agent_id": self._agent_id, "from": "+15550100000", "to": "+15550100001"},
                headers={"X-API-Key": self._api_key, "Accept": "application/json"},
            )
        if response.status_code != 200:
            raise ConnectionError(
                f"POST /v1/sessions/twilio: {response.status_code} {response.text}"
            )
        body = response.json()
        self.session_id = body["session"]["session_id"]
        stream = ElementTree.fromstring(body["twiml"]).find("./Connect/Stream")
        if stream is None:
            raise ConnectionError("the TwiML has no <Connect><Stream>")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        self._ws = await websockets.connect(str(stream.get("url")), max_size=None)
        self._tasks = [asyncio.create_task(self._receive())]
        self._stream_sid, call_sid = "MZ" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "streamSid": self._stream_sid,
                "start": {
                    "streamSid": self._stream_sid,
                    "callSid": call_sid,
                    "accountSid": "AC" + "0" * 32,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": parameters,
                },
            }
        )

    async def _send(self, message: dict) -> None:
        assert self._ws is not None
        self._sequence += 1
        await self._ws.send(json.dumps({**message, "sequenceNumber": str(self._sequence)}))

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                now = time.monotonic()
                if message.get("event") == "media":
                    pcm = audioop.ulaw2lin(base64.b64decode(message["media"]["payload"]), 2)
                    self._log.add(pcm)
                    self._playback_end = max(now, self._playback_end) + len(pcm) / 2 / TWILIO_RATE
                elif message.get("event") == "mark":
                    self._marks += 1
                    echo = asyncio.create_task(
                        self._echo(message["mark"]["name"], self._playback_end - now)
                    )
                    self._tasks.append(echo)
                elif message.get("event") == "clear":
                    self._playback_end = now
        except websockets.ConnectionClosed:
            pass
        finally:
            self._ended = True

    async def _echo(self, name: str, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        try:
            await self._send(
                {"event": "mark", "streamSid": self._stream_sid, "mark": {"name": name}}
            )
        except websockets.ConnectionClosed:
            pass

    async def _media(self, pcm: bytes) -> None:
        payload = audioop.lin2ulaw(pcm, 2)
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(payload), 160)):
            if self.ended:
                return
            media = {"payload": base64.b64encode(payload[offset : offset + 160]).decode()}
            try:
                await self._send({"event": "media", "streamSid": self._stream_sid, "media": media})
            except websockets.ConnectionClosed:
                return
            await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - time.monotonic()))

    async def say(self, text: str) -> None:
        pcm = await speech.speak(text, TWILIO_RATE)
        self._turn_marks = self._marks
        await self._media(pcm)
        self._log.start_turn(time.monotonic())
        await self._media(bytes(int(TWILIO_RATE * 0.5) * 2))

    async def reply(self, timeout: float) -> Reply:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.ended:
            done = self._log.turn_started and self._marks > self._turn_marks
            if done and self._log.quiet_for(SETTLE_SECS):
                break
            await asyncio.sleep(0.05)
        reply = self._log.reply(self.ended)
        self._turn_marks = self._marks
        self._log.start_turn()
        return reply

    async def close(self) -> None:
        if self._ws is not None and not self.ended:
            stop = {"accountSid": "AC" + "0" * 32, "callSid": ""}
            try:
                await self._send({"event": "stop", "streamSid": self._stream_sid, "stop": stop})
            except websockets.ConnectionClosed:
                pass
            await self._ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
