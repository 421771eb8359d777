"""A local Gemini Live server: `WS /ws/google.ai.generativelanguage.{version}.GenerativeService.
BidiGenerateContent`, the Live API's messages as the google-genai client sends and reads them.

It serves TLS only (google-genai always connects with `wss://`; `tests/fakes/tls.py`) and
accepts the key in `x-goog-api-key`, closing with 1008 on another. The first message is
`setup` (model, generation config with the voice, system instruction, tools, transcription,
`realtimeInputConfig`), answered with `setupComplete`. Client messages come with snake_case
top-level keys (`realtime_input`, `client_content`, `tool_response`) and camelCase fields;
both spellings are read.

`realtime_input.audio` (base64 PCM16 at the rate its mime type names) goes to a server VAD,
an energy detector (`tests/fakes/speech.py`) that ends a turn after the setup's
`silenceDurationMs` (500 by default): the turn is transcribed by the local Whisper model
(`serverContent.inputTranscription`) and answered. Caller speech during an answer, once it has
lasted the setup's `prefixPaddingMs` (300 by default), stops it: `serverContent.interrupted`,
then the turn's `turnComplete`. `client_content` with
`turnComplete` and `realtime_input.text` (not blank: Pipecat nudges Gemini 3 models with " ")
are answered too.

Answers play a script (`script()`): a text is spoken with the local Piper voice as
`serverContent.modelTurn` parts of `inlineData` audio (24 kHz), with
`serverContent.outputTranscription` words at their place in the audio, faster than real time
as the real service is; a `ToolCall` is a `toolCall` whose `toolResponse` the answer waits
for before it goes on with the next scripted line. An answer ends with `generationComplete`
and `turnComplete` carrying `usageMetadata`: audio at 25 tokens a second (in and out), text at
4 characters a token, the whole conversation as the input of each answer.
"""

import asyncio
import base64
import json
import re
import uuid
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from tests.audio import speech
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.speech import Transcriber, UtteranceStream
from tests.fakes.threaded import WebSocketFake
from tests.fakes.tls import LoopbackCertificate

OUT_RATE = 24000
CHUNK_SECS = 0.1
SPEEDUP = 2.0
"""How much faster than real time an answer's audio is streamed."""
AUDIO_TOKENS_PER_SEC = 25
DEFAULT_REPLY = "Sorry, I have nothing more to say."
TOOL_RESPONSE_TIMEOUT_SECS = 30
PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"


def _get(message: dict, camel: str) -> Any:
    """A field by its camelCase name or its snake_case one."""
    if camel in message:
        return message[camel]
    return message.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


def camel_keys(value: Any) -> Any:
    """`value` with every field name in camelCase, as the API documents them (the client sends
    some in snake_case); a tool's schema, arguments and results are left as they are."""
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): (
            v if k in ("parameters", "args", "response") else camel_keys(v)
        )
        for k, v in value.items()
    }


class FakeGeminiLive(WebSocketFake):
    def __init__(self, certificate: LoopbackCertificate, api_key: str = "gemini-test-key"):
        super().__init__(certificate.server_context())
        self.api_key = api_key
        self.transcriber = Transcriber()
        speech("Ready.", OUT_RATE, 0.0)  # loads the voice now, not in a call's first answer
        self.replies: deque[str | ToolCall] = deque()
        self.connections: list[str] = []
        """The API version in each accepted connection's path."""
        self.rejected = 0
        self.setups: list[dict] = []
        """Each connection's `setup` (field names in camelCase)."""
        self.received: list[dict] = []
        """Every client message but audio, as sent."""
        self.answers: list[dict] = []
        """Each finished answer: status (`completed`, `interrupted`), transcript, audio_ms, usage."""
        self.function_responses: list[dict] = []
        self.audio_rates: set[int] = set()
        """The sample rates of the caller's audio, as its mime types named them."""

    @property
    def base_url(self) -> str:
        """What `http_options.base_url` names (the client makes the `wss://` URL of it)."""
        return f"https://127.0.0.1:{self.port}/"

    def script(self, *replies: str | ToolCall) -> None:
        """The next answers, in order; then `DEFAULT_REPLY`."""
        self.replies.extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        for recorded in (
            self.connections,
            self.setups,
            self.received,
            self.answers,
            self.function_responses,
            self.audio_rates,
        ):
            recorded.clear()

    def of_kind(self, kind: str) -> list[dict]:
        """The received messages of one kind (`client_content`, `realtime_input`, ...)."""
        return [m[kind] for m in self.received if kind in m]

    def routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self._socket)
        # The client joins a base URL ending in "/" (as Google's does) and "/ws/..." as they are.
        app.router.add_get("/" + PATH, self._socket)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.headers.get("x-goog-api-key") != self.api_key:
            self.rejected += 1
            await ws.close(code=1008, message=b"API key not valid. Please pass a valid API key.")
            return ws
        self.connections.append(request.match_info["version"])
        self._sockets.add(ws)
        try:
            await _Session(self, ws).run()
        finally:
            self._sockets.discard(ws)
        return ws


class _Session(UtteranceStream):
    """One connection: its setup, conversation, and the answer in flight."""

    def __init__(self, server: FakeGeminiLive, ws: web.WebSocketResponse):
        super().__init__(16000, 500)
        self.server = server
        self.ws = ws
        self.setup: dict = {}
        self.history: list[dict] = []
        """The conversation as `Content`s (role, parts), for the usage's text input."""
        self.user_audio_secs = 0.0
        self.prefix_padding_ms = 300
        """Speech it takes to be sure the caller has started (to interrupt an answer)."""
        self.answer: asyncio.Task | None = None
        self.interrupted = False
        self.tool_response: asyncio.Queue[list[dict]] = asyncio.Queue()

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            realtime = _get(message, "realtimeInput")
            if realtime and _get(realtime, "audio"):
                await self._audio(_get(realtime, "audio"))
                continue
            self.server.received.append(message)
            if "setup" in message:
                await self._setup(message["setup"])
            elif realtime is not None:
                if (_get(realtime, "text") or "").strip():
                    self.history.append({"role": "user", "parts": [{"text": realtime["text"]}]})
                    self._answer()
            elif (content := _get(message, "clientContent")) is not None:
                self.history.extend(_get(content, "turns") or [])
                if _get(content, "turnComplete"):
                    self._answer()
            elif (response := _get(message, "toolResponse")) is not None:
                calls = _get(response, "functionResponses") or []
                self.server.function_responses.extend(calls)
                await self.tool_response.put(calls)
        if self.answer:
            self.answer.cancel()

    async def _setup(self, setup: dict) -> None:
        self.setup = setup
        self.server.setups.append(camel_keys(setup))
        detection = _get(_get(setup, "realtimeInputConfig") or {}, "automaticActivityDetection")
        self.endpointing_ms = _get(detection or {}, "silenceDurationMs") or 500
        self.prefix_padding_ms = _get(detection or {}, "prefixPaddingMs") or 300
        await self._send({"setupComplete": {}})

    # -- server VAD ----------------------------------------------------------

    async def _audio(self, blob: dict) -> None:
        rate = re.search(r"rate=(\d+)", _get(blob, "mimeType") or "")
        self.rate = int(rate.group(1)) if rate else 16000
        self.server.audio_rates.add(self.rate)
        data = blob["data"]  # the client's base64 is URL-safe, unpadded
        await self.feed(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        speech_secs = len(self.utterance) / 2 / self.rate
        if speech_secs * 1000 >= self.prefix_padding_ms and self._answering():
            self.interrupted = True

    async def interim(self, pcm: bytes) -> None:
        """Gemini transcribes the caller as it goes; this fake once the turn has ended."""

    async def endpoint(self) -> None:
        async with self.lock:
            pcm = self.take_utterance()
            if not pcm:
                return
            self.user_audio_secs += len(pcm) / 2 / self.rate
            words = await asyncio.to_thread(self.server.transcriber.words, pcm, self.rate)
            text = " ".join(w.text for w in words)
            self.history.append({"role": "user", "parts": [{"text": text}]})
            if _get(self.setup, "inputAudioTranscription") is not None and text:
                await self._send({"serverContent": {"inputTranscription": {"text": text}}})
            if self._answering():
                await self.answer  # type: ignore[misc]  # the interrupted one winds down first
            self._answer()

    # -- answers -------------------------------------------------------------

    def _answering(self) -> bool:
        return self.answer is not None and not self.answer.done()

    def _answer(self) -> None:
        if self._answering():
            return
        self.interrupted = False
        self.answer = asyncio.create_task(self._respond())

    async def _respond(self) -> None:
        transcript, audio_secs = "", 0.0
        reply = self.server.replies.popleft() if self.server.replies else DEFAULT_REPLY
        if isinstance(reply, ToolCall):
            call = {
                "id": f"call-{uuid.uuid4().hex[:12]}",
                "name": reply.name,
                "args": reply.arguments,
            }
            self.history.append({"role": "model", "parts": [{"functionCall": call}]})
            await self._send({"toolCall": {"functionCalls": [call]}})
            try:
                responses = await asyncio.wait_for(
                    self.tool_response.get(), TOOL_RESPONSE_TIMEOUT_SECS
                )
            except TimeoutError:
                responses = []
            self.history.append(
                {"role": "user", "parts": [{"functionResponse": r} for r in responses]}
            )
            reply = self.server.replies.popleft() if self.server.replies else DEFAULT_REPLY
        if isinstance(reply, str) and not self.interrupted:
            transcript, audio_secs = await self._speak(reply)
        if self.interrupted:
            await self._send({"serverContent": {"interrupted": True}})
        else:
            await self._send({"serverContent": {"generationComplete": True}})
        usage = self._usage(transcript, audio_secs)
        await self._send({"serverContent": {"turnComplete": True}, "usageMetadata": usage})
        self.server.answers.append(
            {
                "status": "interrupted" if self.interrupted else "completed",
                "transcript": transcript,
                "audio_ms": int(audio_secs * 1000),
                "usage": usage,
            }
        )

    async def _speak(self, text: str) -> tuple[str, float]:
        """Stream `text` spoken, its words with their audio; stop when interrupted.
        Returns the words sent and the seconds of audio sent."""
        pcm = await asyncio.to_thread(speech, text, OUT_RATE, 0.0)
        words = text.split()
        chunk = int(OUT_RATE * CHUNK_SECS) * 2
        chunks = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        sent_words: list[str] = []
        sent_bytes = 0
        for index, audio in enumerate(chunks):
            if self.interrupted:
                break
            # A word goes out with the chunk where its share of the audio begins.
            while len(sent_words) < len(words) and len(sent_words) * len(chunks) <= index * len(
                words
            ):
                word = words[len(sent_words)]
                delta = word if not sent_words else f" {word}"
                sent_words.append(word)
                await self._send({"serverContent": {"outputTranscription": {"text": delta}}})
            data = base64.b64encode(audio).decode()
            part = {"inlineData": {"mimeType": f"audio/pcm;rate={OUT_RATE}", "data": data}}
            await self._send({"serverContent": {"modelTurn": {"parts": [part]}}})
            sent_bytes += len(audio)
            await asyncio.sleep(CHUNK_SECS / SPEEDUP)
        transcript = " ".join(sent_words)
        self.history.append({"role": "model", "parts": [{"text": transcript}]})
        return transcript, sent_bytes / 2 / OUT_RATE

    def _usage(self, transcript: str, audio_secs: float) -> dict:
        instruction = json.dumps(_get(self.setup, "systemInstruction") or "")
        text_in = (len(instruction) + len(json.dumps(self.history))) // 4
        audio_in = int(self.user_audio_secs * AUDIO_TOKENS_PER_SEC)
        text_out = len(transcript) // 4
        audio_out = int(audio_secs * AUDIO_TOKENS_PER_SEC)
        return {
            "promptTokenCount": text_in + audio_in,
            "responseTokenCount": text_out + audio_out,
            "totalTokenCount": text_in + audio_in + text_out + audio_out,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": text_in},
                {"modality": "AUDIO", "tokenCount": audio_in},
            ],
            "responseTokensDetails": [
                {"modality": "TEXT", "tokenCount": text_out},
                {"modality": "AUDIO", "tokenCount": audio_out},
            ],
        }

    async def _send(self, message: dict) -> None:
        if not self.ws.closed:
            await self.ws.send_json(message)
