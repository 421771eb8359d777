"""Waiting instead of busy: an inbound Twilio call that finds its account at its call cap waits
in line (agent `overflow: queue`, up to `max_wait_secs`) and is connected to the agent when a
place frees, in arrival order across every node, or hears an apology when its wait ends.

Twilio holds the caller, with Twilio's own queue protocol; the line itself, and the handoff of
a freed place, live in the database, so any node may do any step:

- **Joining.** The voice webhook's admission was refused 429 (the account is full, or callers
  wait ahead: admission counts them, see :mod:`app.calls.admission`). :func:`join` adds the
  caller to the end of the account's line (`call_waits`; its place `seq` taken under the
  account's lock) and the webhook answers `<Enqueue waitUrl action>` into the account's Twilio
  queue.
- **Waiting.** Twilio asks the `waitUrl` (:func:`hold`) again each time its answer has played:
  the wait message first, then hold audio; once the caller's deadline has passed, `<Leave/>`,
  and the `<Enqueue>`'s `action` (:func:`left`, `QueueResult=leave`) answers the apology. A
  caller who hangs up is reported there too (`QueueResult=hangup`), or by the number's status
  callback (:func:`call_status`), and leaves the line.
- **Handing over a place.** While anyone is in line, the account's pump (a `call_queue.pump`
  job every `PUMP_SECS`, one chain per account, on the durable job queue) takes the account's
  lock, offers each free place (the cap less live and ringing calls and places already offered)
  to the callers at the front, in order, marking them `offered` (an offered place counts as
  taken for everyone else), and moves each out of Twilio's queue through the REST API (the Queue
  Member resource, addressed by the call's SID, so the caller the database chose is the one
  moved) to `/connect`.
- **Connecting.** `/connect` (:func:`admit`) admits the call through the one admission path,
  counting only the callers ahead of it, and answers the Media Stream TwiML; a refused call (a
  full or draining node) goes back to its place in line (`<Enqueue>` again).

Telnyx and Plivo calls keep busy (or the overflow number) for now.
"""

import io
import math
import wave
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

import numpy as np
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import APIError
from app.state import AppState
from app.storage import call_queue as store
from app.storage import sessions as session_store
from app.storage.ids import new_id, utcnow
from app.storage.models import Agent, CallWait, Job, Session
from app.telephony import twilio
from app.telephony.phone_calls import start_phone_session
from app.urls import own_base_url

PUMP_JOB = "call_queue.pump"
PUMP_SECS = 1.0
"""How often a line's pump looks for a freed place while anyone waits."""
OFFER_SECS = 30
"""How long a place offered to a caller is held for Twilio to move the call to it."""
DEFAULT_WAIT_MESSAGE = (
    "All our lines are busy right now. Please stay on the line and we'll be with you shortly."
)
QUEUE_PATH = "/v1/twilio/queue"
HOLD_AUDIO_SECS = 4
"""The hold audio's length: a waiting caller's deadline is checked at least this often."""


@dataclass(frozen=True)
class Overflow:
    """What an agent does with an inbound call it can't take, read before admission (a refused
    admission expires the agent's row)."""

    agent_id: str
    account_id: str
    number: str | None
    queue: bool
    max_wait_secs: int

    @classmethod
    def of(cls, agent: Agent) -> "Overflow":
        return cls(
            agent.id,
            agent.account_id,
            agent.overflow_number,
            agent.overflow == "queue",
            agent.max_wait_secs,
        )


def queue_name(account_id: str) -> str:
    """The account's Twilio queue (a name of at most 64 characters)."""
    return f"switchboard-{account_id}"


def enqueue_twiml(base_url: str, wait: CallWait) -> str:
    return twilio.enqueue_twiml(
        queue_name(wait.account_id),
        wait_url=f"{base_url}{QUEUE_PATH}/{wait.id}/wait",
        action_url=f"{base_url}{QUEUE_PATH}/{wait.id}/left",
    )


async def join(
    state: AppState,
    db: AsyncSession,
    overflow: Overflow,
    *,
    call_sid: str,
    from_number: str,
    to_number: str,
) -> CallWait | None:
    """Put a call at the end of its account's line; None when the line is full or Twilio's
    REST API (which moves the call on) has no credentials here."""
    if twilio.credentials(state.settings) is None:
        logger.warning("no Twilio credentials: a call can't wait in line, it gets busy")
        return None
    account_id = overflow.account_id
    await db.commit()
    try:
        await session_store.lock_account(db, account_id)
        in_line = await store.count_ahead(db, account_id)
        if in_line >= state.settings.max_waiting_calls:
            await db.rollback()
            return None
        now = utcnow()
        wait = CallWait(
            id=new_id("wait"),
            account_id=account_id,
            agent_id=overflow.agent_id,
            seq=await store.next_seq(db, account_id),
            call_sid=call_sid,
            from_number=from_number,
            to_number=to_number,
            status="waiting",
            deadline=now + timedelta(seconds=overflow.max_wait_secs),
            enqueued_at=now,
        )
        db.add(wait)
        await _keep_pumping(state, db, account_id)
        await db.commit()
    except BaseException:
        await db.rollback()
        raise
    logger.info(f"call {call_sid} waits in line {wait.seq} for account {account_id}")
    return wait


async def _keep_pumping(
    state: AppState, db: AsyncSession, account_id: str, besides: str | None = None, delay=0.0
) -> None:
    """Make sure the line has its pump (under the account's lock, so there is one chain)."""
    if not await state.jobs.is_pending(db, PUMP_JOB, "account_id", account_id, besides):
        state.jobs.enqueue(db, PUMP_JOB, {"account_id": account_id}, delay=delay)


async def run_pump(state: AppState, job: Job) -> None:
    await pump(state, job.payload["account_id"], job.id)


async def pump(state: AppState, account_id: str, job_id: str | None = None) -> None:
    """Offer the account's free places to the callers at the front of its line, in order, and
    move each to `/connect`; pump again in `PUMP_SECS` while anyone is in line."""
    async with state.db.sessions() as db:
        cap = (
            await session_store.lock_account(db, account_id) or state.settings.max_concurrent_calls
        )
        await store.drop_lapsed_offers(db, account_id)
        free = (
            cap
            - await session_store.count_live(db, account_id)
            - await store.count_offered(db, account_id)
        )
        offers = []
        for wait in await store.front(db, account_id, free) if free > 0 else []:
            if wait.queue_sid is None:
                break  # not in Twilio's queue yet: the callers behind it wait their turn
            wait.status, wait.offered_until = "offered", utcnow() + timedelta(seconds=OFFER_SECS)
            offers.append(wait)
        if await store.count_ahead(db, account_id):
            await _keep_pumping(state, db, account_id, besides=job_id, delay=PUMP_SECS)
        await db.commit()
        for wait in offers:
            await _move(state, db, wait)


async def _move(state: AppState, db: AsyncSession, wait: CallWait) -> None:
    """Move an offered caller out of Twilio's queue to `/connect`; one who is gone leaves the
    line, one Twilio could not move goes back to its place."""
    url = f"{own_base_url(state.settings)}{QUEUE_PATH}/{wait.id}/connect"
    try:
        moved = await twilio.dequeue(state.settings, wait.queue_sid or "", wait.call_sid, url)
    except Exception as exc:
        logger.warning(f"could not move waiting call {wait.call_sid} to its place: {exc}")
        await store.settle(db, wait.id, "waiting", unless=("connected", "abandoned", "timed_out"))
    else:
        if not moved:
            await store.settle(db, wait.id, "abandoned", unless=("connected",))
            logger.info(f"waiting call {wait.call_sid} had left Twilio's queue")
    await db.commit()


async def hold(db: AsyncSession, wait: CallWait, form: dict[str, str], base_url: str) -> str:
    """The `waitUrl` answer: the wait message on the first request, then hold audio; `<Leave/>`
    once the wait is over (or the caller no longer waits)."""
    if wait.status == "waiting" and wait.deadline <= utcnow():
        await store.settle(db, wait.id, "timed_out", unless=("connected", "offered"))
        await db.commit()
        await db.refresh(wait)
    if wait.status not in ("waiting", "offered"):
        return twilio.leave_twiml()
    if form.get("QueueSid") and wait.queue_sid != form["QueueSid"]:
        wait.queue_sid = form["QueueSid"][:64]
        await db.commit()
    agent = await db.get(Agent, wait.agent_id)
    message = (agent.wait_message if agent else None) or DEFAULT_WAIT_MESSAGE
    first = form.get("QueueTime", "0") == "0"
    return twilio.hold_twiml(message if first else None, f"{base_url}{QUEUE_PATH}/hold.wav")


async def left(db: AsyncSession, wait: CallWait, queue_result: str) -> bool:
    """The `<Enqueue>`'s action: why the call left Twilio's queue. True when the caller is
    still there to hear the apology (its wait ended, or Twilio could not keep it waiting)."""
    if queue_result in ("redirected", "bridged", "bridging-in-process"):
        return False  # moved to its place: `/connect` answers
    status = "timed_out" if queue_result == "leave" else "abandoned"
    await store.settle(db, wait.id, status, unless=("connected", "timed_out", "abandoned"))
    await db.commit()
    logger.info(f"waiting call {wait.call_sid} left the line: {queue_result}")
    return queue_result != "hangup"


ENDED_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")


async def call_status(db: AsyncSession, call_sid: str, status: str) -> bool:
    """Follow a status callback of a call waiting in line (its hang-up, if it ended: it
    leaves the line); False if no call with this SID ever waited."""
    wait_id = await store.latest_for_call(db, call_sid)
    if wait_id is None:
        return False
    if status in ENDED_STATUSES:
        await store.settle(db, wait_id, "abandoned", unless=("connected", "timed_out", "abandoned"))
        await db.commit()
    return True


async def admit(state: AppState, db: AsyncSession, wait: CallWait) -> Session | None:
    """The session of a caller moved out of the queue to its place, admitted as any call is
    (the cap holds; only the callers ahead of it count); None when refused for now (a full or
    draining node, or the place taken by a session made before the caller came), and it is
    back in line at its place. 409/422 if the agent can no longer take calls."""
    wait_id = wait.id  # a refused admission expires the row
    agent = await db.get(Agent, wait.agent_id)
    if agent is None:
        raise APIError(409, "agent_deleted", f"agent '{wait.agent_id}' is deleted")
    try:
        session, _call = await start_phone_session(
            state,
            db,
            agent,
            carrier="twilio",
            direction="inbound",
            from_number=wait.from_number,
            to_number=wait.to_number,
            call_sid=wait.call_sid,
            queued=wait,
        )
    except APIError as exc:
        final = exc.status not in (429, 503)
        # Back in line, it is moved again only once it is back in Twilio's queue (its next
        # wait request says so).
        await store.settle(
            db,
            wait_id,
            "abandoned" if final else "waiting",
            unless=("connected", "timed_out"),
            queue_sid=None,
        )
        await db.commit()
        if final:
            raise
        await db.refresh(wait)
        logger.info(f"waiting call {wait_id} turned back to its place: {exc.body.message}")
        return None
    logger.info(f"waiting call {wait.call_sid} connected as session {session.id}")
    return session


@cache
def hold_audio() -> bytes:
    """A soft, looping arpeggio (8 kHz 16-bit mono WAV, `HOLD_AUDIO_SECS` long), made here so
    nothing is fetched at run time."""
    rate, notes = 8000, (261.63, 329.63, 392.0, 523.25, 392.0, 329.63, 293.66, 349.23)
    step = HOLD_AUDIO_SECS / len(notes)
    t = np.arange(int(rate * step)) / rate
    envelope = np.minimum(1, t / 0.03) * np.exp(-3 * t)
    chunks = [
        envelope * (np.sin(2 * math.pi * f * t) + 0.3 * np.sin(4 * math.pi * f * t)) for f in notes
    ]
    pcm = (np.concatenate(chunks) * 0.2 * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()
