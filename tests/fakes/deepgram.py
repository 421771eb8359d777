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

from aiohttp import WSMsgType, web

from tests.fakes.speech import Transcriber, UtteranceStream
from tests.fakes.threaded import WebSocketFake


class FakeDeepgram(WebSocketFake):
    def __init__(self, api_key: str = "dg-test-key", endpointing_ms: int = 600):
        super().__init__()
        self.api_key = api_key
        self.endpointing_ms = endpointing_ms
        self.connections: list[dict] = []
        """Query parameters of each accepted connection."""
        self.rejected = 0
        self.audio_secs = 0.0
        self.transcriber = Transcriber()

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
        words = [
            {
                "word": w.text.strip(".,?!").lower(),
                "punctuated_word": w.text,
                "start": w.start,
                "end": w.end,
                "confidence": w.confidence,
            }
            for w in self.transcriber.words(pcm, sample_rate)
        ]
        return " ".join(w["punctuated_word"] for w in words).strip(), words


class _Stream(UtteranceStream):
    """One connection: audio in, `Results` out."""

    def __init__(self, server: FakeDeepgram, ws: web.WebSocketResponse, sample_rate: int):
        super().__init__(sample_rate, server.endpointing_ms)
        self.server = server
        self.ws = ws
        self.request_id = str(uuid.uuid4())

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.server.audio_secs += await self.feed(msg.data)
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

    async def interim(self, pcm: bytes) -> None:
        await self._send_results(pcm, is_final=False)

    async def endpoint(self) -> None:
        await self._final(from_finalize=False, speech_final=True)

    async def _final(self, *, from_finalize: bool, speech_final: bool = False) -> None:
        async with self.lock:
            pcm = self.take_utterance()
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
