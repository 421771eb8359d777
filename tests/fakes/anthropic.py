"""A local Anthropic Messages API: `POST /v1/messages`, answers scripted per test.

Streaming requests get Anthropic's server-sent events (`message_start`, `ping`,
`content_block_start` / `content_block_delta` (`text_delta`, `input_json_delta`) /
`content_block_stop`, `message_delta` with `stop_reason` and usage, `message_stop`);
non-streaming requests get one `message` object. A script entry is a reply text, a
`ToolCall` (or a list of them), a `Failure` (an HTTP error in Anthropic's error shape) or
a `Stall` (no answer for a while, as a provider timing out). Streaming requests (the
conversation) take `script`ed replies; one-shot requests (post-call analysis) take
`script_oneshot` ones, so a late analysis never eats a conversation's reply. Conversation
requests and their usage are kept in `requests` and `usages` (so tests can check what a
call was billed), one-shot ones in `oneshot_requests`.
"""

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass

from aiohttp import web

from tests.fakes.scripted_llm import ToolCall
from tests.fakes.threaded import ThreadedServer


@dataclass
class Failure:
    status: int = 500
    error_type: str = "api_error"
    message: str = "Internal server error"


@dataclass
class Stall:
    secs: float = 30.0


Reply = str | ToolCall | list[ToolCall] | Failure | Stall


class FakeAnthropic(ThreadedServer):
    def __init__(
        self, api_key: str = "sk-ant-test-key", default_reply: str = "Sure, I can help with that."
    ):
        super().__init__()
        self.api_key = api_key
        self.default_reply = default_reply
        self.replies: deque[Reply] = deque()
        self.oneshot_replies: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.oneshot_requests: list[dict] = []
        self.usages: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def script_oneshot(self, *replies: Reply) -> None:
        self.oneshot_replies.extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        self.oneshot_replies.clear()
        self.requests.clear()
        self.oneshot_requests.clear()
        self.usages.clear()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        body = await request.json()
        stream = bool(body.get("stream"))
        (self.requests if stream else self.oneshot_requests).append(body)
        queue = self.replies if stream else self.oneshot_replies
        reply = queue.popleft() if queue else self.default_reply
        if isinstance(reply, Stall):
            await asyncio.sleep(reply.secs)
            reply = self.default_reply
        if isinstance(reply, Failure):
            return _error(reply.status, reply.error_type, reply.message)
        blocks = _blocks(reply)
        usage = _usage(body, blocks)
        if stream:
            self.usages.append(usage)
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude"),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if not stream:
            return web.json_response(message)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for event in _events(message):
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        return response


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": error_type, "message": message}}, status=status
    )


def _blocks(reply: Reply) -> list[dict]:
    calls = [reply] if isinstance(reply, ToolCall) else reply if isinstance(reply, list) else []
    if calls:
        return [
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:20]}",
                "name": c.name,
                "input": c.arguments,
            }
            for c in calls
        ]
    return [{"type": "text", "text": str(reply)}]


def _usage(body: dict, blocks: list[dict]) -> dict:
    """Deterministic token counts: about four characters a token, the cached prefix apart."""
    system = json.dumps(body.get("system", ""))
    cached = "cache_control" in system
    output = sum(len(json.dumps(b.get("input") or b.get("text"))) for b in blocks) // 4 + 1
    return {
        "input_tokens": len(json.dumps(body.get("messages", []))) // 4
        + (0 if cached else len(system) // 4),
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": len(system) // 4 if cached else 0,
    }


def _events(message: dict):
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield {"type": "message_start", "message": start}
    yield {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                text = word if i == 0 else " " + word
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": text},
                }
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {
                    "type": "tool_use",
                    "id": block["id"],
                    "name": block["name"],
                    "input": {},
                },
            }
            arguments = json.dumps(block["input"])
            for i in range(0, len(arguments), 12):
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": arguments[i : i + 12]},
                }
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield {"type": "message_stop"}
