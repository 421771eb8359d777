"""A Twilio Media Streams client that behaves like Twilio, for tests and benchmarks.

It reads TwiML the way Twilio does (the `<Stream url>` and its `<Parameter>`s), opens
the WebSocket, sends `connected` and `start` (with `customParameters`, `callSid`,
`streamSid`, `mediaFormat`), streams caller audio as 20 ms μ-law `media` frames at
real-time pace, plays the agent's audio on a simulated clock and echoes each `mark`
once the audio before it has "played" (or at once on `clear`, as Twilio does), and
ends with `stop`.
"""

import asyncio
import base64
import json
import time
import uuid
from xml.etree import ElementTree

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit PCM → G.711 μ-law."""
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    x = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(x)).astype(np.int32) - 7, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """G.711 μ-law → 16-bit PCM."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16).tobytes()


def parse_twiml(twiml: str) -> tuple[str, dict[str, str]]:
    """The `<Connect><Stream>` URL and its `<Parameter>`s, as Twilio reads them."""
    root = ElementTree.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise ValueError(f"no <Connect><Stream> in TwiML: {twiml}")
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream.get("url"), parameters


class TwilioMediaStreamsClient:
    def __init__(
        self,
        stream_url: str,
        parameters: dict[str, str],
        *,
        call_sid: str | None = None,
        account_sid: str = "AC" + "0" * 32,
    ):
        self.stream_url = stream_url
        self.parameters = parameters
        self.call_sid = call_sid or "CA" + uuid.uuid4().hex
        self.account_sid = account_sid
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.received: list[tuple[float, dict]] = []
        """Every non-media message from the server, with its arrival time."""
        self.agent_audio = bytearray()
        """The agent's μ-law audio as received."""
        self.media_log: list[tuple[float, bytes]] = []
        """(arrival time, μ-law payload) of every agent `media` message."""
        self.media_messages = 0
        self.marks_echoed: list[tuple[str, float]] = []
        """(mark name, wall-clock time Twilio would report it played)."""
        self.marks_received: dict[str, tuple[float, int]] = {}
        """mark name → (wall-clock arrival, bytes of agent audio received before it)."""
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_at: float | None = None
        self._ws = None
        self._sequence = 0
        self._chunk = 0
        self._started = 0.0
        self._playback_end = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def from_twiml(cls, twiml: str, **kwargs) -> "TwilioMediaStreamsClient":
        url, parameters = parse_twiml(twiml)
        return cls(url, parameters, **kwargs)

    async def __aenter__(self) -> "TwilioMediaStreamsClient":
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def open(self, start: bool = True) -> None:
        self._ws = await connect(self.stream_url, max_size=None)
        self._started = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._play_marks()),
        ]
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        if start:
            await self.send_start()

    async def send_start(self, parameters: dict[str, str] | None = None) -> None:
        await self._send(
            {
                "event": "start",
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": SAMPLE_RATE,
                        "channels": 1,
                    },
                    "customParameters": self.parameters if parameters is None else parameters,
                },
                "streamSid": self.stream_sid,
            }
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    async def _send(self, message: dict) -> None:
        self._sequence += 1
        await self._ws.send(json.dumps({**message, "sequenceNumber": str(self._sequence)}))

    async def send_audio(self, pcm_8k: bytes) -> None:
        """16-bit 8 kHz PCM as 20 ms μ-law `media` frames, at real-time pace (until the call ends)."""
        payload = ulaw_encode(pcm_8k)
        start = time.monotonic()
        for i in range(0, len(payload), FRAME_BYTES):
            self._chunk += 1
            try:
                await self._send(
                    {
                        "event": "media",
                        "streamSid": self.stream_sid,
                        "media": {
                            "track": "inbound",
                            "chunk": str(self._chunk),
                            "timestamp": str(int((time.monotonic() - self._started) * 1000)),
                            "payload": base64.b64encode(payload[i : i + FRAME_BYTES]).decode(),
                        },
                    }
                )
            except ConnectionClosed:
                return  # the call ended
            delay = start + (i // FRAME_BYTES + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def send_silence(self, secs: float) -> None:
        await self.send_audio(b"\x00\x00" * int(SAMPLE_RATE * secs))

    async def send_dtmf(self, digit: str) -> None:
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        await self._send(
            {
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    async def _receive(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                now = time.monotonic()
                event = message.get("event")
                if event == "media":
                    audio = base64.b64decode(message["media"]["payload"])
                    self.agent_audio.extend(audio)
                    self.media_log.append((now, audio))
                    self.media_messages += 1
                    self._playback_end = max(now, self._playback_end) + len(audio) / SAMPLE_RATE
                    continue
                self.received.append((now, message))
                if event == "mark":
                    self.marks_received[message["mark"]["name"]] = (
                        time.time(),
                        len(self.agent_audio),
                    )
                    self._pending_marks.append(
                        (max(now, self._playback_end), message["mark"]["name"])
                    )
                elif event == "clear":
                    self._playback_end = now
                    self._pending_marks = [(now, name) for _, name in self._pending_marks]
        except ConnectionClosed:
            pass
        self.close_code = self._ws.close_code
        self.close_reason = self._ws.close_reason
        self.closed_at = time.monotonic()

    async def _play_marks(self) -> None:
        """Echo each mark when the audio before it has played, like Twilio."""
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            due = [m for m in self._pending_marks if m[0] <= now]
            for mark in due:
                self._pending_marks.remove(mark)
                try:
                    await self._send(
                        {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": mark[1]}}
                    )
                except ConnectionClosed:
                    return
                self.marks_echoed.append((mark[1], time.time()))

    def events(self, name: str) -> list[dict]:
        return [m for _, m in self.received if m.get("event") == name]

    async def wait_until(self, condition, timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what} not met within {timeout}s; received {[m.get('event') for _, m in self.received]}"
                )
            await asyncio.sleep(0.02)

    async def wait_closed(self, timeout: float) -> None:
        await self.wait_until(lambda: self.closed_at is not None, timeout, "socket closed")

    async def wait_marks(self, count: int, timeout: float) -> None:
        await self.wait_until(
            lambda: len(self.marks_echoed) >= count, timeout, f"{count} marks echoed"
        )
