"""A client for the direct WebSocket session protocol (used by `switchboard talk` and the tests)."""

import asyncio
import json
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr
import websockets

CHUNK_SECS = 0.02


def read_wav(path: Path, sample_rate: int) -> bytes:
    """A WAV file as 16-bit mono PCM at `sample_rate`."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        if wav.getnchannels() > 1:
            samples = samples.reshape(-1, wav.getnchannels()).mean(axis=1).astype(np.int16)
        if wav.getframerate() != sample_rate:
            samples = soxr.resample(samples, wav.getframerate(), sample_rate)
    return samples.astype(np.int16).tobytes()


def write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


class SessionClient:
    """Speaks the session protocol: streams caller audio, collects events and agent audio."""

    def __init__(self, url: str, sample_rate: int = 16000, headers: dict | None = None):
        self.url = url
        self.sample_rate = sample_rate
        self.headers = headers or {}
        self.events: list[dict] = []
        self.agent_audio = bytearray()
        self.first_audio_at: float | None = None
        self.audio_log: list[tuple[float, int]] = []
        """(arrival time, bytes) of every agent audio frame."""
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ws: websockets.ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._new_event = asyncio.Event()
        self.on_event: Callable[[dict], None] | None = None

    async def __aenter__(self):
        self._ws = await websockets.connect(
            self.url, additional_headers=self.headers, max_size=2**22
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def _connection(self) -> websockets.ClientConnection:
        if self._ws is None:
            raise RuntimeError("not connected: use the client as `async with`")
        return self._ws

    async def _read(self):
        try:
            async for message in self._connection:
                if isinstance(message, bytes):
                    now = time.monotonic()
                    self.first_audio_at = self.first_audio_at or now
                    self.audio_log.append((now, len(message)))
                    self.agent_audio += message
                else:
                    event = json.loads(message)
                    event["_at"] = time.monotonic()
                    self.events.append(event)
                    if self.on_event:
                        self.on_event(event)
                self._new_event.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._connection.close_code
            self.close_reason = self._connection.close_reason
            self._new_event.set()

    @property
    def closed(self) -> bool:
        return self._reader is not None and self._reader.done()

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    async def wait_for(self, kind: str, timeout: float, count: int = 1) -> dict:
        """Wait until `count` events of `kind` have arrived; return the last one."""
        deadline = time.monotonic() + timeout
        while len(self.of_type(kind)) < count:
            if self.closed:
                raise ConnectionError(
                    f"socket closed ({self.close_code} {self.close_reason}) before '{kind}'"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no '{kind}' within {timeout}s; got {[e.get('type') for e in self.events]}"
                )
            self._new_event.clear()
            try:
                await asyncio.wait_for(self._new_event.wait(), remaining)
            except TimeoutError:
                pass
        return self.of_type(kind)[count - 1]

    async def send_event(self, event: dict) -> None:
        await self._connection.send(json.dumps(event))

    async def send_raw(self, data: str | bytes) -> None:
        await self._connection.send(data)

    async def stream(self, pcm: bytes, realtime: bool = True) -> None:
        """Send caller audio in 20 ms frames, paced like a live microphone."""
        chunk = int(self.sample_rate * CHUNK_SECS) * 2
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), chunk)):
            if self.closed:
                return
            await self._connection.send(pcm[offset : offset + chunk])
            if realtime:
                await asyncio.sleep(max(0.0, start + (index + 1) * CHUNK_SECS - time.monotonic()))

    async def stream_silence(self, seconds: float) -> None:
        await self.stream(bytes(int(self.sample_rate * seconds) * 2))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
