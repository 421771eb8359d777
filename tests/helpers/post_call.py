"""After a call: typed conversations to analyse, the analysis and webhooks it produces."""

import hashlib
import hmac
import json
import time

from app.client import SessionClient
from tests.helpers.calls import agent_ws

ANALYSIS_FIELDS = [
    {
        "name": "wants_appointment",
        "type": "boolean",
        "description": "Whether the caller wants an appointment",
    },
    {
        "name": "urgency",
        "type": "enum",
        "description": "How urgent the request is",
        "options": ["low", "medium", "high"],
    },
    {"name": "callback_number", "type": "text", "description": "The number to call back, if given"},
    {"name": "party_size", "type": "number", "description": "How many people the booking is for"},
]
"""Custom analysis fields an agent asks for."""
ANALYSIS = {
    "summary": "The caller asked for a cleaning appointment for two on Monday and left a callback number.",
    "sentiment": "positive",
    "topics": ["appointments", "cleaning"],
    "action_items": ["Call back to confirm the Monday slot"],
    "custom": {
        "wants_appointment": True,
        "urgency": "medium",
        "callback_number": "555 0100",
        "party_size": 2.0,
    },
}
"""A valid analysis of a call about a cleaning appointment, with `ANALYSIS_FIELDS` filled."""


async def talk(server, agent: dict, *lines: str, key: str | None = None) -> str:
    """A short typed conversation (with `key`, else the server's); returns the session id once
    the call has ended."""
    async with SessionClient(agent_ws(server, agent["id"], key)) as client:
        ready = await client.wait_for("session.ready", timeout=30)
        for count, line in enumerate(lines, start=1):
            await client.send_event({"type": "input.text", "text": line})
            await client.wait_for("transcript.agent", timeout=30, count=count)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    return ready["session_id"]


def analysis_requests(llm, text: str) -> list[dict]:
    """The analysis LLM requests whose transcript holds `text`."""
    return [r for r in llm.oneshot_requests if text in json.dumps(r["messages"])]


def wait_for_analysis(api, session_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/v1/sessions/{session_id}/analysis")
        if response.status_code == 200 and response.json()["status"] != "pending":
            return response.json()
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)


def verify(secret: str, request: dict) -> bool:
    """What a webhook receiver does: recompute the HMAC over `<timestamp>.<body>`."""
    timestamp = request["headers"]["X-Switchboard-Timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(request["headers"]["X-Switchboard-Signature"], f"sha256={expected}")
