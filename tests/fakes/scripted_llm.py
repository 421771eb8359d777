"""An OpenAI-compatible chat-completions server whose answers each test scripts.

The real local model is too small to say the same thing twice; tests that depend on
what the agent says, or on a tool call, point a pipeline at this server instead.
"""

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.threaded import ThreadedServer


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


class Hold:
    """A one-shot reply that holds its request until `ScriptedLLM.release()`, then answers
    `default_reply`."""


HOLD = Hold()


@dataclass
class Slow:
    """A reply whose first chunk comes only after `secs` (a slow model)."""

    secs: float
    reply: "str | ToolCall | list[ToolCall]"


Reply = str | ToolCall | list[ToolCall] | Hold | Slow


class ScriptedLLM(ThreadedServer):
    """Answers each chat completion with the next scripted reply (or `default_reply`)."""

    def __init__(self, default_reply: str = "Sure, I can help with that."):
        super().__init__()
        self.default_reply = default_reply
        self.replies: deque[Reply] = deque()
        self.oneshot_replies: list[tuple[str | None, Reply]] = []
        self.requests: list[dict] = []
        """Streaming requests: the conversation."""
        self.oneshot_requests: list[dict] = []
        """Non-streaming requests: post-call analysis."""
        self._held: list[asyncio.Future] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def script_oneshot(self, *replies: Reply, when: str | None = None) -> None:
        """Replies to non-streaming requests (post-call analysis), each taken by the first such
        request whose messages contain `when`; others get `default_reply`. Conversations
        (streaming) never take these, so a late analysis can't eat a test's replies."""
        self.oneshot_replies.extend((when, reply) for reply in replies)

    def release(self) -> None:
        """Answer the requests held by `HOLD`."""

        def resolve():
            for future in self._held:
                if not future.done():
                    future.set_result(None)
            self._held.clear()

        self.loop.call_soon_threadsafe(resolve)

    def reset(self) -> None:
        self.release()
        self.replies.clear()
        self.oneshot_replies.clear()
        self.requests.clear()
        self.oneshot_requests.clear()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "scripted", "object": "model"}]}
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            self.oneshot_requests.append(body)
            reply = self._oneshot_reply(body)
            if reply is HOLD:
                self._held.append(asyncio.get_running_loop().create_future())
                await self._held[-1]
                reply = self.default_reply
            return web.json_response(_whole(reply))
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else self.default_reply
        if isinstance(reply, Slow):
            await asyncio.sleep(reply.secs)
            reply = reply.reply
        chunks = list(_chunks(reply))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append(_usage(body, reply))
        for chunk in chunks:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    def _oneshot_reply(self, body: dict) -> Reply:
        text = json.dumps(body.get("messages", []))
        for index, (when, reply) in enumerate(self.oneshot_replies):
            if when is None or when in text:
                del self.oneshot_replies[index]
                return reply
        return self.default_reply


def _envelope(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage(body: dict, reply: Reply) -> dict:
    """The last chunk of a stream asked for `include_usage`: no choices, the token counts
    (about four characters a token, as for English)."""
    prompt = len(json.dumps(body.get("messages", []))) // 4
    completion = max(len(str(reply)) // 4, 1)
    return {
        **_envelope({}),
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _tool_calls(reply: Reply) -> list[ToolCall]:
    if isinstance(reply, ToolCall):
        return [reply]
    return reply if isinstance(reply, list) else []


def _chunks(reply: Reply):
    yield _envelope({"role": "assistant", "content": ""})
    calls = _tool_calls(reply)
    if calls:
        for index, call in enumerate(calls):
            yield _envelope(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": f"call_{uuid.uuid4().hex[:12]}",
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": json.dumps(call.arguments),
                            },
                        }
                    ]
                }
            )
        yield _envelope({}, "tool_calls")
        return
    words = str(reply).split(" ")
    for index, word in enumerate(words):
        yield _envelope({"content": word if index == 0 else " " + word})
    yield _envelope({}, "stop")


def _whole(reply: Reply) -> dict:
    calls = _tool_calls(reply)
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else str(reply)}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in calls
        ]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
