"""Campaigns: an agent calls a list of contacts, paced, within a calling window, with retries.

Everything runs on the job queue (:mod:`app.jobs`), so any node may do any step and a node's
death loses nothing:

- `campaign.tick` is the campaign's scheduler, one step every `60 / calls_per_minute` seconds.
  Each step is numbered (`Campaign.tick_seq`); a step runs only if its number is the campaign's
  next one, taken with a conditional UPDATE, so a step re-run after its node died (or an old
  chain after a resume) does nothing. A step starts at most one attempt: the first due contact
  whose local time is inside the window, if fewer than `max_concurrent` attempts are under way.
  It marks the contact `calling` and enqueues its `campaign.dial` in the same transaction, then
  enqueues the next step.
- `campaign.dial` places one attempt: `calling` → `dialing` with a conditional UPDATE (only one
  run wins), then the session, the phone call and Twilio's REST request. A run that finds its
  attempt already taken is a re-run after a node died mid-dial: the attempt is recorded
  `failed` rather than risk dialling the number twice.
- Twilio's status callback ends the attempt (:func:`record_outcome`; an answered call's once
  its session has ended): `completed`, or `no_answer` / `busy` / `failed`, retried after
  `retry_after_minutes` until `max_attempts`.
  With answering-machine detection on (the campaign's `voicemail`, else its agent's), a
  machine ends it `voicemail` (:mod:`app.voicemail`), retried the same way.
"""

import csv
import io
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from loguru import logger
from phonenumbers import timezone as number_timezones
from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import APIError
from app.request_body import REQUEST_BODY
from app.state import AppState
from app.storage import campaigns as store
from app.storage import sessions as session_store
from app.storage.ids import new_id, utcnow
from app.storage.models import (
    Account,
    Agent,
    AgentInstance,
    Campaign,
    CampaignContact,
    Job,
    PhoneCall,
    Session,
    SessionAnalysis,
)
from app.telephony import twilio
from app.telephony.numbers import dial_refusal, e164
from app.telephony.phone_calls import start_phone_session
from app.telephony.variables import placeholders
from app.urls import own_base_url
from app.voicemail import Voicemail, call_setting, end_for_machine

TICK_JOB = "campaign.tick"
DIAL_JOB = "campaign.dial"
OUTCOME_JOB = "campaign.outcome"
OUTCOME_WAIT_SECS = 60
"""How long a completed call's attempt waits for its session's end before it is settled."""
OUTCOME_RECHECK_SECS = 1.0
MAX_CONTACTS = 10_000
"""The most contacts one campaign takes."""
MAX_LISTED_ERRORS = 20
"""Row errors named in a 422's message (`details` lists them all)."""
RESERVED_COLUMNS = ("phone", "timezone")
"""Contact fields that are not the call's variables."""
OUTCOMES = {"completed": "completed", "busy": "busy", "no-answer": "no_answer"}
"""The contact outcome of each final Twilio call status (any other is `failed`)."""
RETRIED = {"no_answer", "busy", "failed", "voicemail"}
FINAL_CALL_STATUSES = {"completed", "busy", "no-answer", "failed", "canceled"}
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Window(BaseModel):
    """When contacts may be called: from `start` to `end` (local time; `end` before `start`
    runs past midnight) on `days`, in each contact's own timezone."""

    model_config = REQUEST_BODY

    # JSON carries a time as a string, which strict validation of a Python value refuses
    start: time = Field(description="Local time, like 09:00", strict=False)
    end: time = Field(description="Local time, like 17:30", strict=False)
    days: list[Day] = Field(default=list(DAYS), min_length=1, max_length=7)
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="For contacts whose timezone neither a `timezone` column nor the number tells",
    )

    @model_validator(mode="after")
    def _opens(self) -> "Window":
        if self.start == self.end:
            raise PydanticCustomError(
                "window_never_opens", "the window never opens: start and end are the same time"
            )
        zone(self.timezone)
        return self

    def is_open(self, at: datetime, timezone: str) -> bool:
        local = at.astimezone(ZoneInfo(timezone))
        if DAYS[local.weekday()] not in self.days:
            return False
        now = local.time()
        if self.start < self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


def zone(name: str) -> str:
    """`name` if it is an IANA timezone; PydanticCustomError otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone", "must be an IANA timezone like America/New_York"
        ) from None
    return name


def number_timezone(number: str) -> str | None:
    """The timezone a number is in, when its prefix tells (the first, for a number spanning several)."""
    zones = number_timezones.time_zones_for_number(phonenumbers.parse(number, None))
    known = [name for name in zones if name in available_timezones()]
    return known[0] if known else None


def parse_csv(data: bytes) -> list[dict[str, Any]]:
    """An uploaded contact list: a header row with `phone`, then one contact a row."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise APIError(422, "invalid_contacts", "contacts: the CSV file must be UTF-8") from None
    reader = csv.DictReader(io.StringIO(text), restval="")
    try:
        if "phone" not in (reader.fieldnames or []):
            raise APIError(
                422,
                "invalid_contacts",
                "contacts: the CSV file needs a header row with a `phone` column",
                [{"row": 0, "field": "phone", "message": "no phone column"}],
            )
        return [{name: value for name, value in row.items() if name is not None} for row in reader]
    except csv.Error as exc:
        raise APIError(
            422, "invalid_contacts", f"contacts: line {reader.line_num} of the CSV file: {exc}"
        ) from None


def check_contacts(
    settings, agent: Agent, rows: list[dict[str, Any]], default_timezone: str
) -> list[CampaignContact]:
    """Contacts from rows; 422 naming every bad row and field (numbers we may not dial, unknown
    timezones, variables the agent's placeholders need), or an empty or oversized list."""
    if not rows:
        raise APIError(422, "invalid_contacts", "contacts: the list is empty")
    if len(rows) > MAX_CONTACTS:
        raise APIError(
            422,
            "too_many_contacts",
            f"contacts: {len(rows)} contacts, at most {MAX_CONTACTS} per campaign",
            {"limit": MAX_CONTACTS, "count": len(rows)},
        )
    needed = placeholders(agent.system_prompt, agent.greeting)
    errors: list[dict[str, Any]] = []
    contacts: list[CampaignContact] = []
    first_row: dict[str, int] = {}
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            errors.append({"row": index, "field": "contact", "message": "must be an object"})
            continue
        phone, problems = _row_problems(settings, row, needed)
        if phone in first_row:
            problems.append(("phone", f"{phone} is already row {first_row[phone]}"))
        first_row.setdefault(phone, index)
        errors += [{"row": index, "field": f, "message": m} for f, m in problems]
        if problems:
            continue
        timezone = str(row.get("timezone") or "").strip()
        variables = {k: str(v) for k, v in row.items() if k not in RESERVED_COLUMNS}
        contacts.append(
            CampaignContact(
                id=new_id("cct"),
                row=index,
                phone=phone,
                timezone=timezone or number_timezone(phone) or default_timezone,
                variables=variables,
                status="pending",
                attempts=0,
                next_attempt_at=utcnow(),
                session_ids=[],
            )
        )
    if errors:
        listed = "; ".join(
            f"row {e['row']} {e['field']}: {e['message']}" for e in errors[:MAX_LISTED_ERRORS]
        )
        if len(errors) > MAX_LISTED_ERRORS:
            listed += f"; and {len(errors) - MAX_LISTED_ERRORS} more"
        raise APIError(422, "invalid_contacts", f"contacts: {listed}", errors)
    return contacts


def _row_problems(
    settings, row: dict[str, Any], needed: set[str]
) -> tuple[str, list[tuple[str, str]]]:
    """A contact row's number in E.164 (as given if it isn't one), and what is wrong with the
    row: (field, message) pairs."""
    problems = []
    phone = str(row.get("phone") or "").strip()
    try:
        phone = e164(phone)
        reason = dial_refusal(settings, phone)
    except PydanticCustomError as exc:
        reason = exc.message()
    if reason:
        problems.append(("phone", reason))
    variables = {k: v for k, v in row.items() if k not in RESERVED_COLUMNS}
    for name, value in variables.items():
        if not isinstance(value, str | int | float | bool) or len(str(value)) > 2000:
            problems.append((name, "must be a text or a number of at most 2000 characters"))
    for name in sorted(needed - {k for k, v in variables.items() if v not in (None, "")}):
        problems.append((name, f"needed by the agent's {{{{{name}}}}}"))
    if timezone := str(row.get("timezone") or "").strip():
        try:
            zone(timezone)
        except PydanticCustomError as exc:
            problems.append(("timezone", exc.message()))
    return phone, problems


async def account_cap(state: AppState, db: AsyncSession, account_id: str) -> int:
    cap = await db.scalar(select(Account.max_concurrent_calls).where(Account.id == account_id))
    return cap or state.settings.max_concurrent_calls


async def create(
    state: AppState,
    db: AsyncSession,
    agent: Agent,
    *,
    name: str,
    from_number: str,
    calls_per_minute: float,
    max_concurrent: int,
    window: Window | None,
    voicemail: Voicemail | None,
    max_attempts: int,
    retry_after_minutes: float,
    contacts: list[CampaignContact],
) -> Campaign:
    """Store a campaign with its contacts and start its scheduler; 422 if `max_concurrent`
    is over the account's call cap."""
    cap = await account_cap(state, db, agent.account_id)
    if max_concurrent > cap:
        raise APIError(
            422,
            "validation_error",
            f"max_concurrent: {max_concurrent} is over the account's cap of {cap} live calls",
            [{"loc": ["max_concurrent"], "msg": f"at most {cap}", "type": "less_than_equal"}],
        )
    campaign = Campaign(
        id=new_id("cmp"),
        account_id=agent.account_id,
        agent_id=agent.id,
        name=name,
        status="running",
        from_number=from_number,
        calls_per_minute=calls_per_minute,
        max_concurrent=max_concurrent,
        window=window.model_dump(mode="json") if window else None,
        voicemail=voicemail.model_dump() if voicemail else None,
        max_attempts=max_attempts,
        retry_after_minutes=retry_after_minutes,
        tick_seq=0,
    )
    db.add(campaign)
    await db.flush()
    for contact in contacts:
        contact.campaign_id = campaign.id
    db.add_all(contacts)
    state.jobs.enqueue(db, TICK_JOB, {"campaign_id": campaign.id, "seq": 0})
    await db.commit()
    logger.info(f"campaign {campaign.id}: {len(contacts)} contacts for agent {agent.id}")
    return campaign


async def run_tick(state: AppState, job: Job) -> None:
    await tick(state, job.payload["campaign_id"], job.payload["seq"])


async def tick_gave_up(state: AppState, job: Job, error: str) -> None:
    """A scheduling step that failed every attempt ends its chain: the campaign stops
    (`scheduling_failed`) instead of staying `running` with nothing to run it."""
    async with state.db.sessions() as db:
        campaign = await db.get_one(Campaign, job.payload["campaign_id"])
        if campaign.status not in ("running", "paused"):
            return
        campaign.status, campaign.stop_reason = "stopped", "scheduling_failed"
        await store.cancel_waiting(db, campaign.id)
        await db.commit()
    logger.error(f"campaign {campaign.id} stopped: its scheduling failed ({error})")


async def run_dial(state: AppState, job: Job) -> None:
    await dial(state, job.payload["contact_id"], job.payload["attempt"])


def _interval(campaign: Campaign) -> float:
    return 60 / campaign.calls_per_minute


async def tick(state: AppState, campaign_id: str, seq: int) -> None:
    """One scheduling step (see the module's docstring)."""
    async with state.db.sessions() as db:
        if not await store.take_tick(db, campaign_id, seq):
            return  # a re-run, or a chain a resume replaced
        campaign = await db.get_one(Campaign, campaign_id)
        if campaign.status != "running":
            await db.commit()
            return
        agent = await db.get(Agent, campaign.agent_id)
        if agent is None or agent.status == "deleted":
            campaign.status, campaign.stop_reason = "stopped", "agent_deleted"
            await store.cancel_waiting(db, campaign.id)
            await db.commit()
            logger.info(f"campaign {campaign.id} stopped: its agent was deleted")
            return
        counts = await store.status_counts(db, campaign.id)
        in_flight = sum(counts.get(status, 0) for status in store.IN_FLIGHT)
        if not in_flight and not counts.get("pending"):
            campaign.status = "completed"
            await db.commit()
            logger.info(f"campaign {campaign.id} completed")
            return
        if agent.status == "active" and in_flight < campaign.max_concurrent:
            contact = await _next_contact(db, campaign)
            if contact is not None:
                contact.status, contact.attempts = "calling", contact.attempts + 1
                state.jobs.enqueue(
                    db, DIAL_JOB, {"contact_id": contact.id, "attempt": contact.attempts}
                )
        state.jobs.enqueue(
            db, TICK_JOB, {"campaign_id": campaign.id, "seq": seq + 1}, delay=_interval(campaign)
        )
        await db.commit()


async def _next_contact(db: AsyncSession, campaign: Campaign) -> CampaignContact | None:
    """The first due contact whose window is open now."""
    window = Window.model_validate(campaign.window) if campaign.window else None
    now = utcnow()
    for contact in await store.due_contacts(db, campaign.id, limit=200):
        if window is None or window.is_open(now, contact.timezone):
            return contact
    return None


async def dial(state: AppState, contact_id: str, attempt: int) -> None:
    """Place attempt `attempt` of a contact, once (see the module's docstring)."""
    async with state.db.sessions() as db:
        taken = await store.take_attempt(db, contact_id, attempt)
        await db.commit()
        contact = await db.get_one(CampaignContact, contact_id)
        if not taken:
            if contact.status == "dialing" and contact.attempts == attempt:
                await _end_attempt(
                    db, contact, "failed", "the node placing this call was lost; not redialled"
                )
            return
        campaign = await db.get_one(Campaign, contact.campaign_id)
        agent = await db.get_one(Agent, campaign.agent_id)
        if contact.instance_id is None:
            instance = AgentInstance(
                id=new_id("ins"),
                account_id=agent.account_id,
                agent_id=agent.id,
                variables=contact.variables,
            )
            db.add(instance)
            contact.instance_id = instance.id
        try:
            session, call = await start_phone_session(
                state,
                db,
                agent,
                carrier="twilio",
                direction="outbound",
                from_number=campaign.from_number,
                to_number=contact.phone,
                instance_id=contact.instance_id,
                voicemail=call_setting(campaign.voicemail, agent.voicemail),
            )
        except APIError as exc:
            await _end_attempt(db, contact, "failed", exc.body.message)
            return
        contact.call_id = call.id
        contact.session_ids = [*contact.session_ids, session.id]
        await db.commit()
        base = own_base_url(state.settings)
        try:
            call.call_sid = await twilio.place_call(
                state.settings,
                to=contact.phone,
                from_=campaign.from_number,
                url=f"{base}/v1/sessions/twilio/task/{call.id}/connect",
                status_callback=f"{base}/v1/sessions/twilio/task/{call.id}/status",
                amd_callback=f"{base}/v1/sessions/twilio/task/{call.id}/amd"
                if session.voicemail
                else None,
            )
        except APIError as exc:
            call.status, call.error = "failed", exc.body.message
            await session_store.finish(
                db, session.id, status="failed", end_reason="call_failed", error=exc.body.message
            )
            await _end_attempt(db, contact, "failed", exc.body.message)
            return
        await db.commit()


async def record_outcome(
    state: AppState, db: AsyncSession, call: PhoneCall, call_status: str
) -> None:
    """End the campaign attempt this call is (if any) on its final status. An answered call
    still running ends on its node when the stream stops, maybe after this callback, and that
    end may be `voicemail` (the pipeline's detector heard a machine): the outcome waits for it
    (:func:`run_outcome`), up to `OUTCOME_WAIT_SECS`."""
    if call_status not in FINAL_CALL_STATUSES:
        return
    contact = await store.contact_dialing(db, call.id)
    if contact is None:
        return
    session = await db.get_one(Session, call.session_id)
    if call_status == "completed" and session.ended_at is None:
        until = utcnow() + timedelta(seconds=OUTCOME_WAIT_SECS)
        state.jobs.enqueue(db, OUTCOME_JOB, {"call_id": call.id, "until": until.isoformat()})
        await db.commit()
        return
    await _settle_attempt(db, contact, session, call_status)


async def run_outcome(state: AppState, job: Job) -> None:
    """Record a completed call's attempt once its session has ended (or the wait is over)."""
    async with state.db.sessions() as db:
        call = await db.get_one(PhoneCall, job.payload["call_id"])
        contact = await store.contact_dialing(db, call.id)
        if contact is None:
            return
        session = await db.get_one(Session, call.session_id)
        if session.ended_at is None and utcnow() < datetime.fromisoformat(job.payload["until"]):
            state.jobs.enqueue(db, OUTCOME_JOB, job.payload, delay=OUTCOME_RECHECK_SECS)
            await db.commit()
            return
        await _settle_attempt(db, contact, session, call.status)


async def _settle_attempt(
    db: AsyncSession, contact: CampaignContact, session: Session, call_status: str
) -> None:
    if session.end_reason == "voicemail":  # the detector in the call's pipeline heard a machine
        await _end_attempt(db, contact, "voicemail", "answered by a machine")
        return
    error = None if call_status == "completed" else f"the call ended {call_status}"
    await _end_attempt(db, contact, OUTCOMES.get(call_status, "failed"), error)


async def machine_answered(
    state: AppState, db: AsyncSession, call: PhoneCall, answered_by: str
) -> None:
    """Follow Twilio's answering-machine verdict on an outbound call (:func:`end_for_machine`);
    with a machine, a campaign's attempt ends `voicemail`."""
    if not await end_for_machine(state, db, call, answered_by):
        return
    contact = await store.contact_dialing(db, call.id)
    if contact is not None:
        await _end_attempt(db, contact, "voicemail", f"answered by a machine ({answered_by})")


async def _end_attempt(
    db: AsyncSession, contact: CampaignContact, outcome: str, error: str | None
) -> None:
    """Record an attempt's outcome: retried later if the campaign allows, else final."""
    campaign = await db.get_one(Campaign, contact.campaign_id)
    contact.last_outcome, contact.last_error = outcome, error
    retry = (
        outcome in RETRIED
        and contact.attempts < campaign.max_attempts
        and campaign.status in ("running", "paused")
    )
    if retry:
        contact.status = "pending"
        contact.next_attempt_at = utcnow() + timedelta(minutes=campaign.retry_after_minutes)
    else:
        contact.status = outcome
    await db.commit()
    logger.info(
        f"campaign {campaign.id} contact {contact.row}: attempt {contact.attempts} {outcome}"
        + (", to be retried" if retry else "")
    )


def _refuse_unless(campaign: Campaign, *statuses: str, action: str) -> None:
    if campaign.status not in statuses:
        raise APIError(
            409,
            f"campaign_{campaign.status}",
            f"campaign '{campaign.id}' is {campaign.status} and cannot be {action}",
        )


async def pause(db: AsyncSession, campaign: Campaign) -> None:
    """No new attempts start (calls under way go on); its scheduler stops at its next step."""
    _refuse_unless(campaign, "running", action="paused")
    campaign.status = "paused"
    await db.commit()


async def resume(state: AppState, db: AsyncSession, campaign: Campaign) -> None:
    """Back to running, with a new scheduler chain (the old one's next step is void)."""
    _refuse_unless(campaign, "paused", action="resumed")
    campaign.status = "running"
    campaign.tick_seq += 1
    state.jobs.enqueue(db, TICK_JOB, {"campaign_id": campaign.id, "seq": campaign.tick_seq})
    await db.commit()


async def cancel(db: AsyncSession, campaign: Campaign) -> None:
    """Contacts not yet dialled are cancelled; calls under way go on to their end."""
    _refuse_unless(campaign, "running", "paused", action="cancelled")
    campaign.status = "cancelled"
    await store.cancel_waiting(db, campaign.id)
    await db.commit()


EXPORT_COLUMNS = ["row", "phone", "status", "attempts", "last_outcome", "last_error", "session_ids"]


async def export_csv(db: AsyncSession, campaign: Campaign) -> str:
    """Every contact with its outcome, its variables, and its last session's analysis fields."""
    contacts, _total = await store.list_contacts(db, campaign.id)
    last_sessions = [c.session_ids[-1] for c in contacts if c.session_ids]
    analyses = {
        a.session_id: a.result or {}
        for a in await db.scalars(
            select(SessionAnalysis).where(SessionAnalysis.session_id.in_(last_sessions))
        )
    }
    variables = sorted({name for c in contacts for name in c.variables})
    fields = sorted({name for result in analyses.values() for name in result})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS + variables + [f"analysis.{name}" for name in fields])
    for c in contacts:
        analysis = analyses.get(c.session_ids[-1], {}) if c.session_ids else {}
        writer.writerow(
            [c.row, c.phone, c.status, c.attempts, c.last_outcome or "", c.last_error or ""]
            + [" ".join(c.session_ids)]
            + [c.variables.get(name, "") for name in variables]
            + [analysis.get(name, "") for name in fields]
        )
    return out.getvalue()
