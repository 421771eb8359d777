"""Agent webhooks: signed POSTs of session events, retried with exponential backoff.

Every event is recorded as a delivery first, then sent by a background task, so a slow
or dead receiver never holds up a call. The body is JSON; `X-Switchboard-Signature` is
`sha256=<hex>`, HMAC-SHA256 with the agent's `webhook_secret` (its current one, read for
every attempt, so a rotation applies at once) over `<timestamp>.<body>`, and
`X-Switchboard-Timestamp` is that timestamp (Unix seconds) — the same scheme as webhook
tools. A 2xx answer delivers; anything else (redirects included) is retried. Requests go
through the outbound policy (:mod:`app.outbound`).
"""

import asyncio
import hashlib
import hmac
import json
import time

import httpx
from loguru import logger

from app import outbound
from app.state import AppState
from app.storage import webhooks as webhook_store
from app.storage.ids import utcnow
from app.storage.models import Agent

EVENTS = ("session.started", "session.ended", "transcript.updated", "analysis.completed")
DEFAULT_EVENTS = ("session.started", "session.ended", "analysis.completed")
SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
EVENT_HEADER = "X-Switchboard-Event"
DELIVERY_HEADER = "X-Switchboard-Delivery"

_TASKS: set[asyncio.Task] = set()
"""Deliveries in flight (held so they aren't garbage-collected)."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 with `secret` over `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send(state: AppState, agent: Agent, event: str, session_id: str | None, data: dict) -> None:
    """Queue `event` for the agent's webhook, if it has one and wants the event; returns at once."""
    if not agent.webhook_url or event not in (agent.webhook_events or DEFAULT_EVENTS):
        return
    task = asyncio.create_task(
        _deliver(state, agent.account_id, agent.id, agent.webhook_url, event, session_id, data),
        name=f"webhook-{event}-{session_id}",
    )
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _deliver(
    state: AppState, account_id: str, agent_id: str, url: str, event: str, session_id: str | None, data: dict,
) -> None:
    settings = state.settings
    payload = {"event": event, "created_at": utcnow().isoformat(), "agent_id": agent_id, "session_id": session_id,
               "data": data}
    async with state.db.sessions() as db:
        delivery_id = await webhook_store.create_delivery(
            db, account_id=account_id, agent_id=agent_id, session_id=session_id, event=event, url=url, payload=payload,
        )
    body = json.dumps({"id": delivery_id, **payload}).encode()
    async with outbound.client(settings, settings.webhook_timeout_secs) as client:
        for attempt in range(1, settings.webhook_max_attempts + 1):
            async with state.db.sessions() as db:
                secret = await webhook_store.current_secret(db, agent_id)
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json", EVENT_HEADER: event, DELIVERY_HEADER: delivery_id,
                TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body),
            }
            status_code, error = None, None
            try:
                response = await client.post(url, content=body, headers=headers)
                status_code = response.status_code
                if not response.is_success:
                    error = f"HTTP {status_code}: {response.text[:200]}"
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            last = attempt == settings.webhook_max_attempts
            status = "delivered" if error is None else "failed" if last else "pending"
            async with state.db.sessions() as db:
                await webhook_store.record_attempt(db, delivery_id, status=status, status_code=status_code, error=error)
            if error is None:
                return
            logger.warning(f"webhook {delivery_id} ({event}, session {session_id}) attempt {attempt} failed: {error}")
            if not last:
                await asyncio.sleep(settings.webhook_backoff_secs * 2 ** (attempt - 1))
