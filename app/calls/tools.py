"""What the agent's tools do: running a call's tool calls (:class:`ToolRunner`), argument
checks, webhook calls.

A tool definition (stored on the agent, or in an inline call's body) has ``name``,
``description``, ``parameters`` (JSON Schema) and ``type``: ``client`` (the WebSocket
client runs it), ``webhook`` (the server POSTs the arguments to ``url``), or a
built-in: ``collect`` (the arguments are the answer: a conversation flow keeps them),
``end_call`` or ``transfer_call`` (to ``phone_number``; ``mode`` cold or warm, see
:mod:`app.telephony.transfer`). A failure never
raises: it becomes ``{"error": ...}`` for the LLM, so the agent can say so.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
from jsonschema import Draft202012Validator
from loguru import logger
from pipecat.services.llm_service import FunctionCallParams, FunctionCallResultProperties

from app import outbound
from app.settings import Settings
from app.storage.ids import utcnow
from app.tracing import tracer
from app.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from pipelines.builder import GOODBYE

DEFAULT_TIMEOUT_SECS = 10.0
DEFAULT_ANSWER_TIMEOUT_SECS = 30
"""How long a warm transfer rings the person before the agent carries on."""


def argument_errors(schema: dict[str, Any], arguments: Any) -> str | None:
    """Why `arguments` don't fit the tool's JSON Schema; None when they do."""
    errors = sorted(
        Draft202012Validator(schema).iter_errors(arguments), key=lambda e: list(e.absolute_path)
    )
    if not errors:
        return None
    return "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}" for e in errors
    )


async def call_webhook(
    settings: Settings,
    tool: dict[str, Any],
    arguments: dict[str, Any],
    *,
    session_id: str,
    call_id: str,
) -> Any:
    """POST the arguments as JSON to the tool's URL (through the outbound policy); its JSON
    answer, or an error for the LLM."""
    timeout = tool.get("timeout_secs") or DEFAULT_TIMEOUT_SECS
    body = json.dumps(arguments).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Switchboard-Session": session_id,
        "X-Switchboard-Tool": tool["name"],
        "X-Switchboard-Tool-Call": call_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(tool["secret"], timestamp, body),
    }
    try:
        async with outbound.client(settings, timeout) as client:
            response = await client.post(tool["url"], content=body, headers=headers)
    except httpx.TimeoutException:
        return {"error": f"tool '{tool['name']}' did not answer within {timeout:g}s"}
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        logger.warning(f"session {session_id}: webhook tool '{tool['name']}' failed: {exc!r}")
        if outbound.refused(exc):
            return {"error": f"tool '{tool['name']}' has an address the server may not reach"}
        return {"error": f"tool '{tool['name']}' could not be reached"}
    if response.status_code >= 400:
        return {
            "error": f"tool '{tool['name']}' failed with HTTP {response.status_code}",
            "body": response.text[:500],
        }
    try:
        return response.json()
    except ValueError:
        return {"result": response.text[:4000]}


class CallActions(Protocol):
    """What the built-in tools do to the call they run in."""

    session_id: str

    async def end(self, reason: str) -> None: ...

    async def end_with_goodbye(self, reason: str, goodbye: str) -> None: ...

    async def transfer(self, number: str) -> str | None:
        """Move the call to `number`; an error for the LLM, or None."""

    async def warm_transfer(self, number: str, answer_timeout_secs: int) -> str | None:
        """Connect the caller to `number` once someone there answers and has heard a summary;
        an error for the LLM (no answer: the call carries on), or None."""


Record = Callable[[str, str, str], Awaitable[None]]
SendEvent = Callable[[dict], Awaitable[None]]


class ToolRunner:
    """Runs one call's tool calls: checks the arguments against the tool's schema, runs the
    tool by its type, records call and result in the transcript (speaker TOOL), and answers
    the LLM. Failures go back to the LLM as ``{"error": ...}``.

    ``send_event``: how to reach the session client that runs ``client`` tools; None when
    the connection has none."""

    def __init__(
        self,
        settings: Settings,
        call: CallActions,
        tools: list[dict],
        *,
        record: Record,
        send_event: SendEvent | None,
    ):
        self._settings = settings
        self._call = call
        self._tools = {t["name"]: t for t in tools}
        self._record = record
        self._send_event = send_event
        self._pending: dict[str, asyncio.Future] = {}

    async def run(self, params: FunctionCallParams) -> None:
        """One tool call from the LLM (the pipeline's tool handler)."""
        result, then = await self.execute(
            params.function_name, dict(params.arguments), params.tool_call_id
        )
        if then is None:
            await params.result_callback(result)
        else:
            await params.result_callback(
                result, properties=FunctionCallResultProperties(run_llm=False)
            )
            await then()

    async def execute(
        self, name: str, arguments: dict, call_id: str
    ) -> tuple[Any, Callable[[], Awaitable[None]] | None]:
        """Check and run one tool call and record it: its result, and what to do once the
        LLM has the result (None, or the built-ins' end of the call)."""
        tool = self._tools.get(name)
        then = None
        if tool is None:
            result = {"error": f"unknown tool '{name}'"}
        elif problem := argument_errors(tool.get("parameters") or {"type": "object"}, arguments):
            result = {"error": f"invalid arguments for tool '{tool['name']}': {problem}"}
        else:
            attributes = {
                "tool.name": tool["name"],
                "tool.type": tool.get("type", "client"),
                "session.id": self._call.session_id,
            }
            with tracer.start_as_current_span("tool.call", attributes=attributes):
                result, then = await self._dispatch(tool, arguments, call_id)
        entry = {"call_id": call_id, "name": name, "arguments": arguments, "result": result}
        # Kept even if the call ends meanwhile (a transferred caller's stream stops at once).
        await asyncio.shield(self._record("TOOL", json.dumps(entry), utcnow().isoformat()))
        return result, then

    async def _dispatch(self, tool: dict, arguments: dict, call_id: str):
        """Run one tool: its result, and what to do once the LLM has it (built-ins end the call)."""
        kind = tool.get("type", "client")
        call = self._call
        if kind == "webhook":
            return await call_webhook(
                self._settings, tool, arguments, session_id=call.session_id, call_id=call_id
            ), None
        if kind == "collect":
            return {"ok": True, "collected": arguments}, None
        if kind == "end_call":
            return {"ok": True, "status": "ending the call"}, lambda: call.end_with_goodbye(
                "agent_ended", GOODBYE
            )
        if kind == "transfer_call":
            number = tool["phone_number"]
            if tool.get("mode") == "warm":
                timeout = tool.get("answer_timeout_secs") or DEFAULT_ANSWER_TIMEOUT_SECS
                error = await call.warm_transfer(number, timeout)
            else:
                error = await call.transfer(number)
            if error:
                return {"error": error}, None
            return {
                "ok": True,
                "status": f"transferred to {number}",
            }, lambda: call.end("transferred")
        if self._send_event is None:
            return {
                "error": f"tool '{tool['name']}' runs on the client, and this connection has none"
            }, None
        return await self._run_client_tool(tool, arguments, call_id), None

    async def _run_client_tool(self, tool: dict, arguments: dict, call_id: str):
        """A tool the WebSocket client runs: send `tool.call`, wait for its `tool.result`."""
        name, timeout = tool["name"], tool.get("timeout_secs") or DEFAULT_TIMEOUT_SECS
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        assert self._send_event is not None  # checked by the caller
        await self._send_event(
            {"type": "tool.call", "call_id": call_id, "name": name, "arguments": arguments}
        )
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return {"error": f"the client did not answer tool '{name}' within {timeout:g}s"}
        finally:
            self._pending.pop(call_id, None)

    def client_result(self, call_id: str, result: Any) -> bool:
        """The client's `tool.result`; False if no tool call is waiting for it."""
        future = self._pending.get(call_id)
        if future is None or future.done():
            return False
        future.set_result(result)
        return True

    def cancel_pending(self) -> None:
        """The call ended: stop waiting for client tools."""
        for future in self._pending.values():
            future.cancel()
