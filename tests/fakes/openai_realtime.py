"""A local OpenAI Realtime server: `WS /v1/realtime?model=...`, the GA Realtime events.

It accepts `Authorization: Bearer <key>`, answers `session.created`, merges each
`session.update` into the session and confirms it with `session.updated`, and reads
`input_audio_buffer.append` (base64 PCM16, 24 kHz). Its server VAD is an energy detector
(`tests/fakes/speech.py`) ending a turn after the session's `silence_duration_ms`: it sends
`input_audio_buffer.speech_started`, `speech_stopped`, `committed`, the user item, its
transcript from the local Whisper model (`conversation.item.input_audio_transcription.completed`)
and then, as `create_response` does, a response. Caller speech during a response cancels it
(`interrupt_response`): `response.done` with status `cancelled`.

Responses play a script (`script()`): a text is spoken with the local Piper voice, streamed as
`response.output_audio.delta` with `response.output_audio_transcript.delta` words at their
place in the audio, faster than real time as the real service is; a `ToolCall` is a
`function_call` item with `response.function_call_arguments.done`, answered by the client's
`conversation.item.create` (`function_call_output`) and `response.create`. `response.done`
carries token usage: audio at 10 tokens a second in and 20 out, text at 4 characters a token.
`conversation.item.truncate` beyond an item's audio, `response.cancel` with no response and a
second `response.create` during one are refused with the API's `error` events.
"""

import asyncio
import base64
import json
import uuid
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from tests.audio import speech
from tests.fakes.scripted_llm import ToolCall
from tests.fakes.speech import Transcriber, UtteranceStream
from tests.fakes.threaded import WebSocketFake

RATE = 24000
CHUNK_SECS = 0.1
SPEEDUP = 2.0
"""How much faster than real time a reply's audio is streamed."""
AUDIO_IN_TOKENS_PER_SEC = 10
AUDIO_OUT_TOKENS_PER_SEC = 20
DEFAULT_REPLY = "Sorry, I have nothing more to say."


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class FakeOpenAIRealtime(WebSocketFake):
    def __init__(self, api_key: str = "sk-realtime-test"):
        super().__init__()
        self.api_key = api_key
        self.transcriber = Transcriber()
        self.replies: deque[str | ToolCall] = deque()
        self.connections: list[dict] = []
        """Query parameters of each accepted connection."""
        self.rejected = 0
        self.received: list[dict] = []
        """Every client event but the audio appends."""
        self.sessions: list[dict] = []
        """Each connection's session as the last `session.update` left it."""
        self.responses: list[dict] = []
        """Each finished response: id, status, transcript, audio_ms, usage."""
        self.function_outputs: list[dict] = []
        self.truncations: list[dict] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def script(self, *replies: str | ToolCall) -> None:
        """The next responses, in order; then `DEFAULT_REPLY`."""
        self.replies.extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        for recorded in (
            self.connections,
            self.received,
            self.sessions,
            self.responses,
            self.function_outputs,
            self.truncations,
        ):
            recorded.clear()

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.received if e["type"] == kind]

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/realtime", self._socket)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.rejected += 1
            return web.json_response(
                {"error": {"type": "invalid_request_error", "code": "invalid_api_key"}},
                status=401,
            )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections.append(dict(request.query))
        self._sockets.add(ws)
        try:
            await _Session(self, ws, request.query.get("model", "gpt-realtime")).run()
        finally:
            self._sockets.discard(ws)
        return ws


class _Session(UtteranceStream):
    """One connection: its session, conversation and the response in flight."""

    def __init__(self, server: FakeOpenAIRealtime, ws: web.WebSocketResponse, model: str):
        super().__init__(RATE, 500)
        self.server = server
        self.ws = ws
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": _id("sess"),
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "alloy"},
            },
            "tools": [],
            "tool_choice": "auto",
        }
        server.sessions.append(self.session)
        self.items: list[dict] = []
        self.audio_ms: dict[str, int] = {}
        """Audio length of each assistant item, for truncation."""
        self.user_item: str | None = None
        self.user_audio_secs = 0.0
        self.response: asyncio.Task | None = None
        self.cancel_reason: str | None = None

    async def run(self) -> None:
        await self._send({"type": "session.created", "session": self.session})
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            kind = event.get("type")
            if kind == "input_audio_buffer.append":
                await self._append(base64.b64decode(event["audio"]))
                continue
            self.server.received.append(event)
            if kind == "session.update":
                await self._update_session(event["session"])
            elif kind == "conversation.item.create":
                await self._create_item(event["item"])
            elif kind == "conversation.item.truncate":
                await self._truncate(event)
            elif kind == "response.create":
                await self._response_create()
            elif kind == "response.cancel":
                await self._response_cancel()
            else:
                await self._error("invalid_request_error", "unknown_event", f"unknown {kind}")
        if self.response:
            self.response.cancel()

    # -- session and conversation --------------------------------------------

    async def _update_session(self, update: dict) -> None:
        _merge(self.session, update)
        turn_detection = self.session["audio"]["input"]["turn_detection"] or {}
        self.endpointing_ms = turn_detection.get("silence_duration_ms", 500)
        await self._send({"type": "session.updated", "session": self.session})

    async def _add_item(self, item: dict) -> None:
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        for kind in ("conversation.item.added", "conversation.item.done"):
            await self._send({"type": kind, "previous_item_id": previous, "item": item})

    async def _create_item(self, item: dict) -> None:
        item = {"id": _id("item"), "object": "realtime.item", "status": "completed", **item}
        if item["type"] == "function_call_output":
            calls = {i.get("call_id") for i in self.items if i["type"] == "function_call"}
            if item.get("call_id") not in calls:
                await self._error(
                    "invalid_request_error", "invalid_value", "no function call with that call_id"
                )
                return
            self.server.function_outputs.append(item)
        await self._add_item(item)

    async def _truncate(self, event: dict) -> None:
        length = self.audio_ms.get(event["item_id"])
        if length is None or event["audio_end_ms"] > length:
            await self._error(
                "invalid_request_error", "invalid_value", "audio_end_ms beyond the item's audio"
            )
            return
        self.server.truncations.append({**event, "audio_ms": length})
        await self._send(
            {
                "type": "conversation.item.truncated",
                "item_id": event["item_id"],
                "content_index": event["content_index"],
                "audio_end_ms": event["audio_end_ms"],
            }
        )

    # -- server VAD ----------------------------------------------------------

    async def _append(self, pcm: bytes) -> None:
        had_speech = bool(self.utterance)
        await self.feed(pcm)
        if not had_speech and self.utterance:
            await self._speech_started()

    async def _speech_started(self) -> None:
        self.user_item = _id("item")
        turn_detection = self.session["audio"]["input"]["turn_detection"] or {}
        prefix = turn_detection.get("prefix_padding_ms", 300) / 1000
        await self._send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": int(max(self.utterance_start - prefix, 0) * 1000),
                "item_id": self.user_item,
            }
        )
        if self._responding() and turn_detection.get("interrupt_response", True):
            self.cancel_reason = "turn_detected"

    async def interim(self, pcm: bytes) -> None:
        """The Realtime API transcribes a turn once it is committed."""

    async def endpoint(self) -> None:
        async with self.lock:
            pcm = self.take_utterance()
            item_id = self.user_item or _id("item")
            self.user_item = None
            if not pcm:
                return
            self.user_audio_secs += len(pcm) / 2 / RATE
            await self._send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": int(self.received_secs * 1000),
                    "item_id": item_id,
                }
            )
            previous = self.items[-1]["id"] if self.items else None
            await self._send(
                {
                    "type": "input_audio_buffer.committed",
                    "previous_item_id": previous,
                    "item_id": item_id,
                }
            )
            item = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            }
            await self._add_item(item)
            if self.session["audio"]["input"].get("transcription"):
                words = await asyncio.to_thread(self.server.transcriber.words, pcm, RATE)
                transcript = " ".join(w.text for w in words)
                item["content"][0]["transcript"] = transcript
                await self._send(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": item_id,
                        "content_index": 0,
                        "transcript": transcript,
                    }
                )
            turn_detection = self.session["audio"]["input"]["turn_detection"] or {}
            if turn_detection.get("create_response", True):
                await self._response_create()

    # -- responses -----------------------------------------------------------

    def _responding(self) -> bool:
        return self.response is not None and not self.response.done()

    async def _response_create(self) -> None:
        if self._responding():
            await self._error(
                "invalid_request_error",
                "conversation_already_has_active_response",
                "Conversation already has an active response in progress",
            )
            return
        self.cancel_reason = None
        self.response = asyncio.create_task(self._respond())

    async def _response_cancel(self) -> None:
        if not self._responding():
            await self._error(
                "invalid_request_error",
                "response_cancel_not_active",
                "Cancellation failed: no active response found",
            )
            return
        self.cancel_reason = "client_cancelled"

    async def _respond(self) -> None:
        response: dict[str, Any] = {
            "id": _id("resp"),
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
            "output_modalities": ["audio"],
        }
        await self._send({"type": "response.created", "response": response})
        reply = self.server.replies.popleft() if self.server.replies else DEFAULT_REPLY
        if isinstance(reply, ToolCall):
            item, transcript, audio_secs = await self._function_call(response, reply), "", 0.0
        else:
            item, transcript, audio_secs = await self._speak(response, reply)
        response["output"] = [item]
        response["status"] = "cancelled" if self.cancel_reason else "completed"
        if self.cancel_reason:
            response["status_details"] = {"type": "cancelled", "reason": self.cancel_reason}
        response["usage"] = self._usage(transcript, audio_secs)
        self.server.responses.append(
            {
                "id": response["id"],
                "status": response["status"],
                "transcript": transcript,
                "audio_ms": int(audio_secs * 1000),
                "usage": response["usage"],
            }
        )
        await self._send({"type": "response.done", "response": response})

    async def _output_item(self, response: dict, item: dict) -> None:
        await self._send(
            {
                "type": "response.output_item.added",
                "response_id": response["id"],
                "output_index": 0,
                "item": item,
            }
        )
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        await self._send(
            {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
        )

    async def _item_done(self, response: dict, item: dict) -> None:
        item["status"] = "incomplete" if self.cancel_reason else "completed"
        done = {"response_id": response["id"], "output_index": 0, "item": item}
        await self._send({"type": "response.output_item.done", **done})
        await self._send({"type": "conversation.item.done", "item": item})

    async def _function_call(self, response: dict, call: ToolCall) -> dict:
        arguments = json.dumps(call.arguments)
        item = {
            "id": _id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": _id("call"),
            "name": call.name,
            "arguments": "",
        }
        await self._output_item(response, item)
        where = {
            "response_id": response["id"],
            "item_id": item["id"],
            "output_index": 0,
            "call_id": item["call_id"],
        }
        await self._send(
            {"type": "response.function_call_arguments.delta", **where, "delta": arguments}
        )
        item["arguments"] = arguments
        await self._send(
            {
                "type": "response.function_call_arguments.done",
                **where,
                "name": call.name,
                "arguments": arguments,
            }
        )
        await self._item_done(response, item)
        return item

    async def _speak(self, response: dict, text: str) -> tuple[dict, str, float]:
        """Stream `text` spoken, its words with their audio; stop early if cancelled.
        Returns the item, the words sent and the seconds of audio sent."""
        item = {
            "id": _id("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        await self._output_item(response, item)
        part = {
            "response_id": response["id"],
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
        }
        await self._send(
            {
                "type": "response.content_part.added",
                **part,
                "part": {"type": "audio", "transcript": ""},
            }
        )
        pcm = await asyncio.to_thread(speech, text, RATE, 0.0)
        words = text.split()
        chunk = int(RATE * CHUNK_SECS) * 2
        chunks = [pcm[i : i + chunk] for i in range(0, len(pcm), chunk)]
        sent_words: list[str] = []
        sent_bytes = 0
        for index, audio in enumerate(chunks):
            if self.cancel_reason:
                break
            # A word goes out with the chunk where its share of the audio begins.
            while len(sent_words) < len(words) and len(sent_words) * len(chunks) <= index * len(
                words
            ):
                delta = words[len(sent_words)] if not sent_words else f" {words[len(sent_words)]}"
                sent_words.append(words[len(sent_words)])
                await self._send(
                    {"type": "response.output_audio_transcript.delta", **part, "delta": delta}
                )
            await self._send(
                {
                    "type": "response.output_audio.delta",
                    **part,
                    "delta": base64.b64encode(audio).decode(),
                }
            )
            sent_bytes += len(audio)
            self.audio_ms[item["id"]] = int(sent_bytes / 2 / RATE * 1000)
            await asyncio.sleep(CHUNK_SECS / SPEEDUP)
        transcript = " ".join(sent_words)
        await self._send({"type": "response.output_audio.done", **part})
        await self._send(
            {"type": "response.output_audio_transcript.done", **part, "transcript": transcript}
        )
        content = {"type": "output_audio", "transcript": transcript}
        await self._send({"type": "response.content_part.done", **part, "part": content})
        item["content"] = [content]
        await self._item_done(response, item)
        return item, transcript, sent_bytes / 2 / RATE

    def _usage(self, transcript: str, audio_secs: float) -> dict:
        """The whole conversation is the input of each response, as the API bills it."""
        text_in = (len(self.session.get("instructions") or "") + len(json.dumps(self.items))) // 4
        audio_in = int(self.user_audio_secs * AUDIO_IN_TOKENS_PER_SEC)
        text_out = len(transcript) // 4
        audio_out = int(audio_secs * AUDIO_OUT_TOKENS_PER_SEC)
        return {
            "total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    async def _error(self, error_type: str, code: str, message: str) -> None:
        await self._send(
            {"type": "error", "error": {"type": error_type, "code": code, "message": message}}
        )

    async def _send(self, event: dict) -> None:
        if not self.ws.closed:
            await self.ws.send_json({"event_id": _id("event"), **event})


def _merge(target: dict, update: dict) -> None:
    """`session.update` semantics: the fields given replace the session's, objects field by field."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
