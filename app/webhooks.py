"""Agent webhooks: signed POSTs of session events, retried with exponential backoff.

Every event is recorded as a delivery, with a durable job to send it, in the transaction
that makes the change it reports; a slow or dead receiver never holds up a call, and a
delivery cut off by a dead node is sent again by another (`app/jobs.py`). The body is
JSON with the event's `id`, fixed when the event is created: every retry sends the same
id (and the same body), so receivers can deduplicate. `X-Switchboard-Signature` is
`sha256=<hex>`, HMAC-SHA256 with the agent's `webhook_secret` (its current one, read for
every attempt, so a rotation applies at once) over `<timestamp>.<body>`,
and `X-Switchboard-Timestamp` is that timestamp (Unix seconds) — the same scheme as
webhook tools. A 2xx answer delivers; anything else (redirects included) is retried.
Requests go through the outbound policy (:mod:`app.outbound`).
"""

import hashlib
import hmac
import json
import time

import httpx
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from app import outbound
from app.jobs import JobQueue
from app.settings import Settings
from app.storage import webhooks as webhook_store
from app.storage.db import Database
from app.storage.ids import utcnow
from app.storage.models import Agent, Job, WebhookDelivery

EVENTS = ("session.started", "session.ended", "transcript.updated", "analysis.completed")
DEFAULT_EVENTS = ("session.started", "session.ended", "analysis.completed")
SIGNATURE_HEADER = "X-Switchboard-Signature"
TIMESTAMP_HEADER = "X-Switchboard-Timestamp"
EVENT_HEADER = "X-Switchboard-Event"
DELIVERY_HEADER = "X-Switchboard-Delivery"
JOB_KIND = "webhook.deliver"


class DeliveryFailed(Exception):
    pass


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 with `secret` over `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send(
    jobs: JobQueue, db: AsyncSession, agent: Agent, event: str, session_id: str | None, data: dict
) -> None:
    """Add `event` for the agent's webhook to `db`'s transaction, if it has one and wants the
    event; it is sent once that commits."""
    if not agent.webhook_url or event not in (agent.webhook_events or DEFAULT_EVENTS):
        return
    payload = {
        "event": event,
        "created_at": utcnow().isoformat(),
        "agent_id": agent.id,
        "session_id": session_id,
        "data": data,
    }
    delivery_id = webhook_store.add_delivery(
        db,
        account_id=agent.account_id,
        agent_id=agent.id,
        session_id=session_id,
        event=event,
        url=agent.webhook_url,
        payload=payload,
    )
    call = {"session_id": session_id, "agent_id": agent.id, "account_id": agent.account_id}
    jobs.enqueue(db, JOB_KIND, {"delivery_id": delivery_id, **call})


async def deliver(settings: Settings, database: Database, job: Job) -> None:
    """One attempt at a delivery (the job): its outcome is recorded on the delivery, and a
    failure raised so the job is retried."""
    async with database.sessions() as db:
        delivery = await db.get_one(WebhookDelivery, job.payload["delivery_id"])
        agent = await db.get_one(Agent, delivery.agent_id)
    if delivery.status != "pending":
        return  # settled by a node that died before it could close the job
    body = json.dumps({"id": delivery.id, **delivery.payload}).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: delivery.id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(agent.webhook_secret or "", timestamp, body),
    }
    status_code, error = None, None
    try:
        async with outbound.client(settings, settings.webhook_timeout_secs) as client:
            response = await client.post(delivery.url, content=body, headers=headers)
        status_code = response.status_code
        if not response.is_success:
            error = f"HTTP {status_code}: {response.text[:200]}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    status = (
        "delivered"
        if error is None
        else "failed"
        if job.attempts >= job.max_attempts
        else "pending"
    )
    async with database.sessions() as db:
        await webhook_store.record_attempt(
            db, delivery.id, status=status, status_code=status_code, error=error
        )
    if error is not None:
        logger.warning(
            f"webhook {delivery.id} ({delivery.event}, session {delivery.session_id}) "
            f"attempt {job.attempts} failed: {error}"
        )
        raise DeliveryFailed(error)
