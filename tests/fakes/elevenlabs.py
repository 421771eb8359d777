"""A local ElevenLabs multi-context TTS WebSocket
(`/v1/text-to-speech/{voice_id}/multi-stream-input`), speaking with the local Piper voice.

Requests carry `xi-api-key`; the query names `model_id`, `output_format` (`pcm_<rate>` or
`ulaw_8000`) and `auto_mode`. Client messages are JSON with a `context_id`: the first one opens
the context (`{"text": " ", "voice_settings": ...}`), `text` adds to it (with `auto_mode=true`
each text is generated at once, otherwise it waits in the context's buffer), `{"text": ""}`
only keeps it alive, `flush` generates what is buffered, `close_context` finishes the context's
audio then answers `{"isFinal": true, "contextId": ...}`, and `{"close_socket": true}` ends the
connection. Audio comes as `{"audio": <base64>, "alignment": ..., "normalizedAlignment": ...,
"contextId": ...}`, its character timings counted from the start of that message's audio.
"""

import asyncio
import base64
import json

from aiohttp import WSMsgType, web

from tests.audio import speech
from tests.fakes.threaded import WebSocketFake
from tests.fakes.twilio_client import ulaw_encode


class FakeElevenLabs(WebSocketFake):
    def __init__(self, api_key: str = "xi-test-key"):
        super().__init__()
        self.api_key = api_key
        self.connections: list[dict] = []
        """Voice id and query parameters of each accepted connection."""
        self.messages: list[dict] = []
        """Every message clients sent."""
        self.spoken: list[str] = []
        """Each text generated, in order."""
        self.characters = 0
        self.rejected = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._socket)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("xi-api-key") != self.api_key:
            self.rejected += 1
            return web.json_response(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}},
                status=401,
            )
        output_format = request.query.get("output_format", "mp3_44100_128")
        if not output_format.startswith("pcm_") and output_format != "ulaw_8000":
            return web.json_response({"detail": f"fake: no {output_format}"}, status=400)
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        self.connections.append({"voice_id": request.match_info["voice_id"], **request.query})
        self._sockets.add(ws)
        queue: asyncio.Queue = asyncio.Queue()
        worker = asyncio.create_task(
            self._speak(ws, queue, output_format, request.query.get("auto_mode") == "true")
        )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    message = json.loads(msg.data)
                    self.messages.append(message)
                    await queue.put(message)
                    if message.get("close_socket"):
                        break
            await worker
        finally:
            worker.cancel()
            self._sockets.discard(ws)
            await ws.close()
        return ws

    async def _speak(self, ws, queue: asyncio.Queue, output_format: str, auto_mode: bool) -> None:
        """Answer one connection's messages in order."""
        buffers: dict[str, str] = {}
        while True:
            message = await queue.get()
            if message.get("close_socket"):
                for ctx, text in buffers.items():
                    await self._generate(ws, ctx, text, output_format)
                return
            ctx = message.get("context_id", "default")
            buffers[ctx] = buffers.get(ctx, "") + message.get("text", "")
            if auto_mode or message.get("flush") or message.get("close_context"):
                await self._generate(ws, ctx, buffers.pop(ctx), output_format)
            if message.get("close_context"):
                await _send(ws, {"isFinal": True, "contextId": ctx})

    async def _generate(self, ws, ctx: str, text: str, output_format: str) -> None:
        if not text.strip():
            return
        self.spoken.append(text)
        self.characters += len(text)
        rate = 8000 if output_format == "ulaw_8000" else int(output_format.removeprefix("pcm_"))
        pcm = await asyncio.to_thread(speech, text.strip(), rate, 0.0)
        audio = ulaw_encode(pcm) if output_format == "ulaw_8000" else pcm
        step_ms = len(pcm) / 2 / rate * 1000 / len(text)
        alignment = {
            "chars": list(text),
            "charStartTimesMs": [round(i * step_ms) for i in range(len(text))],
            "charDurationsMs": [round(step_ms)] * len(text),
        }
        await _send(
            ws,
            {
                "audio": base64.b64encode(audio).decode(),
                "alignment": alignment,
                "normalizedAlignment": alignment,
                "contextId": ctx,
            },
        )


async def _send(ws, message: dict) -> None:
    if not ws.closed:
        await ws.send_json(message)
