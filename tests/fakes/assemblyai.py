"""A local AssemblyAI Universal-Streaming server: `WS /v3/ws`, AssemblyAI's v3 messages.

It accepts `Authorization: <key>` (no `Bearer`), reads binary audio (`pcm_s16le` or
`pcm_mulaw`) at the `sample_rate` query parameter, finds speech with an energy detector and
transcribes it with the local Whisper model, so the words are real. It answers `Begin`, then
`Turn` partials (`end_of_turn: false`) while the caller speaks and a final `Turn`
(`end_of_turn: true`) after `max_turn_silence` ms of silence or on `ForceEndpoint`; a
Universal-3 Pro model (`u3-rt-pro*`, `universal-3-*-pro*`) formats that final itself, other
models with `format_turns=true` follow the unformatted final with a formatted one. U3 Pro
models also send `SpeechStarted`. `Terminate` ends the turn in flight, then `Termination`
and a normal close.
"""

import asyncio
import json
import time
import uuid

from aiohttp import WSMsgType, web

from tests.fakes.speech import Transcriber, UtteranceStream, Word
from tests.fakes.threaded import WebSocketFake
from tests.fakes.twilio_client import ulaw_decode

U3_PRO_PREFIXES = ("u3-rt-pro", "universal-3-5-pro", "universal-3-6-pro")
DEFAULT_MAX_TURN_SILENCE_MS = 1280


class FakeAssemblyAI(WebSocketFake):
    def __init__(self, api_key: str = "aai-test-key"):
        super().__init__()
        self.api_key = api_key
        self.connections: list[dict] = []
        """Query parameters of each accepted connection."""
        self.received: list[dict] = []
        """Every JSON message clients sent (`ForceEndpoint`, `Terminate`, ...)."""
        self.rejected = 0
        self.audio_secs = 0.0
        self.transcriber = Transcriber()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v3/ws"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v3/ws", self._socket)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self.api_key:
            self.rejected += 1
            return web.json_response({"error": "Invalid API key"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections.append(dict(request.query))
        self._sockets.add(ws)
        try:
            await _Session(self, ws, request.query).run()
        finally:
            self._sockets.discard(ws)
        return ws


class _Session(UtteranceStream):
    """One connection: audio in, `Turn` messages out."""

    def __init__(self, server: FakeAssemblyAI, ws: web.WebSocketResponse, query):
        silence = query.get("max_turn_silence") or DEFAULT_MAX_TURN_SILENCE_MS
        super().__init__(int(query.get("sample_rate", "16000")), int(silence))
        self.server = server
        self.ws = ws
        self.mulaw = query.get("encoding") == "pcm_mulaw"
        self.u3_pro = query.get("speech_model", "").startswith(U3_PRO_PREFIXES)
        self.format_turns = query.get("format_turns") == "true"
        self.turn_order = 0
        self.started = time.monotonic()

    async def run(self) -> None:
        await self._send({"type": "Begin", "id": str(uuid.uuid4()), "expires_at": _in(3600)})
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                audio = ulaw_decode(msg.data) if self.mulaw else msg.data
                had_speech = bool(self.utterance)
                self.server.audio_secs += await self.feed(audio)
                if self.u3_pro and not had_speech and self.utterance:
                    await self._send(
                        {"type": "SpeechStarted", "timestamp": int(self.utterance_start * 1000)}
                    )
            elif msg.type == WSMsgType.TEXT:
                message = json.loads(msg.data)
                self.server.received.append(message)
                if message.get("type") == "ForceEndpoint":
                    await self.endpoint()
                elif message.get("type") == "Terminate":
                    await self.endpoint()
                    await self._send(
                        {
                            "type": "Termination",
                            "audio_duration_seconds": round(self.received_secs, 3),
                            "session_duration_seconds": round(time.monotonic() - self.started, 3),
                        }
                    )
                    await self.ws.close()

    async def interim(self, pcm: bytes) -> None:
        words = await asyncio.to_thread(self.server.transcriber.words, pcm, self.rate)
        # A partial's transcript holds its finalized words; the last one may still change.
        await self._send(self._turn(words, final=False, formatted=False))

    async def endpoint(self) -> None:
        async with self.lock:
            pcm = self.take_utterance()
            if not pcm:
                return
            words = await asyncio.to_thread(self.server.transcriber.words, pcm, self.rate)
            if self.u3_pro:
                await self._send(self._turn(words, final=True, formatted=True))
            else:
                await self._send(self._turn(words, final=True, formatted=False))
                if self.format_turns:
                    await self._send(self._turn(words, final=True, formatted=True))
            self.turn_order += 1

    def _turn(self, words: list[Word], *, final: bool, formatted: bool) -> dict:
        finished = words if final else words[:-1]
        texts = [w.text if formatted else w.text.strip(".,?!").lower() for w in finished]
        return {
            "type": "Turn",
            "turn_order": self.turn_order,
            "turn_is_formatted": formatted,
            "end_of_turn": final,
            "transcript": " ".join(texts),
            "end_of_turn_confidence": 0.9 if final else 0.05,
            "words": [
                {
                    "start": int((self.utterance_start + w.start) * 1000),
                    "end": int((self.utterance_start + w.end) * 1000),
                    "text": w.text,
                    "confidence": w.confidence,
                    "word_is_final": final or i < len(words) - 1,
                }
                for i, w in enumerate(words)
            ],
            "utterance": " ".join(w.text for w in words) if final else "",
        }

    async def _send(self, message: dict) -> None:
        if not self.ws.closed:
            await self.ws.send_json(message)


def _in(secs: int) -> int:
    return int(time.time()) + secs
