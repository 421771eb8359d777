"""SQLAlchemy tables. Every resource belongs to an account."""

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.storage.ids import utcnow


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON, list: JSON}


DEFAULT_ACCOUNT_ID = "acc_default"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    max_concurrent_calls: Mapped[int | None] = mapped_column(Integer)
    """Overrides the server's default cap on this account's live calls."""
    recording_quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """Overrides the server's default cap on this account's recording storage."""


class ApiKey(Base):
    """A hashed API key. The secret itself is never stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class DashboardSession(Base):
    """A dashboard log-in: the cookie holds a random id, only its hash is stored."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class ServerSecret(Base):
    """Process-shared secrets generated on first start (token signing key)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    voice_id: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(16), default="en")
    tools: Mapped[list] = mapped_column(default=list)
    max_turns: Mapped[int] = mapped_column(Integer, default=50)
    greeting: Mapped[str | None] = mapped_column(Text)
    pipeline: Mapped[str] = mapped_column(String(100), default="local")
    phone_numbers: Mapped[list] = mapped_column(default=list)
    """E.164 numbers whose inbound calls reach this agent (each one held in `phone_numbers`)."""
    first_speaker: Mapped[str] = mapped_column(String(8), default="agent")
    """`agent` greets first; `user` waits for the caller."""
    interruptible: Mapped[bool] = mapped_column(Boolean, default=True)
    max_duration: Mapped[int] = mapped_column(Integer, default=3000)
    """Seconds before the call gets a goodbye and ends `max_duration`."""
    inactivity_timeout: Mapped[int | None] = mapped_column(Integer)
    """Seconds of caller silence before `inactivity_action`; None turns it off."""
    inactivity_action: Mapped[str] = mapped_column(String(16), default="end_call")
    recording_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    endpointing: Mapped[str | None] = mapped_column(String(16))
    """`fast`, `balanced` or `patient`; None takes the pipeline's `turn.endpointing`."""
    overflow_number: Mapped[str | None] = mapped_column(String(200))
    """Dialled for an inbound call the agent can't take (instead of busy or an apology)."""
    overflow: Mapped[str] = mapped_column(String(8), default="busy", server_default="busy")
    """What an inbound call does at the account's call cap: `busy`, or `queue` (it waits)."""
    max_wait_secs: Mapped[int] = mapped_column(Integer, default=60, server_default="60")
    wait_message: Mapped[str | None] = mapped_column(Text)
    """What a waiting caller hears first; None: the server's default."""
    flow: Mapped[dict | None] = mapped_column(JSON)
    """A conversation flow (Pipecat's flow config, `app/flows.py`); None: the system prompt alone."""
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    """Where session events are POSTed, signed with `webhook_secret`."""
    webhook_secret: Mapped[str | None] = mapped_column(String(200))
    analysis_fields: Mapped[list | None] = mapped_column(JSON)
    """Custom post-call analysis fields: `{name, type, description, options}`."""
    webhook_events: Mapped[list | None] = mapped_column(JSON)
    """Which events the webhook gets; None: all but `transcript.updated`."""
    voicemail: Mapped[dict | None] = mapped_column(JSON)
    """`{detect, action, message}`: answering-machine detection on its outbound calls (`app/voicemail.py`)."""


class Session(Base):
    """One call between a caller and an agent."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_recording_expiry", "recording_status", "recording_stored_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"), index=True)
    """None for an inline call, whose agent lives in `inline_config`."""
    status: Mapped[str] = mapped_column(String(16), default="created", index=True)
    connection_type: Mapped[str] = mapped_column(String(16), default="websocket")
    session_metadata: Mapped[dict] = mapped_column("metadata", default=dict)
    initial_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    duration_secs: Mapped[float | None] = mapped_column(Float)
    end_reason: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(200), index=True)
    """The id of the node (server process) running the call: when its lease runs out, the call ends `node_lost`."""
    inline_config: Mapped[dict | None] = mapped_column(JSON)
    """An inline call's whole agent configuration (`POST /v1/calls/inline`)."""
    resume_deadline: Mapped[datetime | None]
    """Set while a dropped WebSocket client may reconnect and carry on (until then)."""
    recording_status: Mapped[str | None] = mapped_column(String(16))
    """`recording` (the call is writing it), `available` (in the recording store), `expired`
    (deleted after the retention period) or `skipped` (see `recording_reason`); None: not recorded."""
    recording_bytes: Mapped[int | None] = mapped_column(BigInteger)
    recording_stored_at: Mapped[datetime | None]
    recording_reason: Mapped[str | None] = mapped_column(String(200))
    """Why the call was not recorded, or why its recording is gone."""
    flow_state: Mapped[dict | None] = mapped_column(JSON)
    """A flow call's `{"path": [node, ...], "values": {...}, "flow": the flow it runs}`; None
    without a flow."""
    voicemail: Mapped[dict | None] = mapped_column(JSON)
    """The answering-machine setting an outbound call follows (its campaign's or its agent's);
    None: no detection (inbound calls, or detection off)."""


class TranscriptEntry(Base):
    """One finished turn, written when the turn ends."""

    __tablename__ = "transcript_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    speaker: Mapped[str] = mapped_column(String(8))
    content: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime]
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)


class AgentInstance(Base):
    """Per-caller variables that fill an agent's `{{name}}` placeholders."""

    __tablename__ = "agent_instances"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    variables: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PhoneCall(Base):
    """One carrier call (inbound or outbound) and the session it runs; an outbound call
    is the "call task" Twilio's callbacks name."""

    __tablename__ = "phone_calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    instance_id: Mapped[str | None] = mapped_column(String(40))
    carrier: Mapped[str] = mapped_column(String(16), default="twilio")
    direction: Mapped[str] = mapped_column(String(16))
    from_number: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(64))
    call_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PhoneNumber(Base):
    """Who holds a phone number: one account, and the one agent its inbound calls reach.
    Keyed by the E.164 number, so no two agents (or accounts) can hold it at once."""

    __tablename__ = "phone_numbers"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsedRelayToken(Base):
    """A relay token that opened a media stream; it can't open another."""

    __tablename__ = "used_relay_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(40), index=True)
    used_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionAnalysis(Base):
    """Post-call analysis of one session: `pending`, `completed` (with `result`) or `failed`."""

    __tablename__ = "session_analyses"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SessionCost(Base):
    """What one finished session used, per provider, and what that cost."""

    __tablename__ = "session_costs"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    cost: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SessionLatency(Base):
    __tablename__ = "session_latency"

    session_id: Mapped[str] = mapped_column(String(40), ForeignKey("sessions.id"), primary_key=True)
    record: Mapped[dict]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One event POSTed (or being retried) to an agent's webhook."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """`pending` (being retried), `delivered` or `failed` (gave up)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[datetime | None]


class Job(Base):
    """Work done after a call, run by whichever node claims it (`app/jobs.py`)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_run_at", "status", "run_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """`pending` (waiting, or running while `locked_until` is ahead) or `failed` (gave up)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    """Not before then (a retry's backoff)."""
    locked_by: Mapped[str | None] = mapped_column(String(40))
    """The node running it, until `locked_until`; after that any node may take it over."""
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Node(Base):
    """A running server process (one per worker) and its lease, renewed every few seconds."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    live_calls: Mapped[int] = mapped_column(Integer, default=0)
    load: Mapped[float] = mapped_column(Float, default=0)
    """CPU use of the process over the last heartbeat, as a share of the machine (0–1)."""


class Campaign(Base):
    """A batch of outbound calls by one agent, paced and retried (`app/campaigns.py`)."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    """`running`, `paused`, `completed`, `cancelled`, or `stopped` (see `stop_reason`)."""
    stop_reason: Mapped[str | None] = mapped_column(String(40))
    from_number: Mapped[str] = mapped_column(String(32))
    calls_per_minute: Mapped[float] = mapped_column(Float)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    window: Mapped[dict | None] = mapped_column(JSON)
    """`{start, end, days, timezone}`: when contacts may be called, in their local time."""
    voicemail: Mapped[dict | None] = mapped_column(JSON)
    """`{detect, action, message}`: what to do when an answering machine picks up."""
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry_after_minutes: Mapped[float] = mapped_column(Float)
    tick_seq: Mapped[int] = mapped_column(Integer, default=0)
    """The number of the one scheduling job that may run next (a re-run of an older one is a no-op)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CampaignContact(Base):
    """One number a campaign calls, its variables and its attempts."""

    __tablename__ = "campaign_contacts"
    __table_args__ = (
        Index("ix_campaign_contacts_due", "campaign_id", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"))
    row: Mapped[int] = mapped_column(Integer)
    """Its place in the uploaded list (1 = the first contact)."""
    phone: Mapped[str] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64))
    variables: Mapped[dict] = mapped_column(default=dict)
    instance_id: Mapped[str | None] = mapped_column(String(40))
    """The agent instance holding `variables` (made at the first attempt)."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """`pending`, `calling` (an attempt queued), `dialing` (placed), or an outcome:
    `completed`, `no_answer`, `busy`, `failed`, `voicemail`, `cancelled`."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    call_id: Mapped[str | None] = mapped_column(String(40), index=True)
    """The phone call of the attempt in progress (or the last one)."""
    session_ids: Mapped[list] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CallWait(Base):
    """An inbound call waiting for a place under its account's call cap, in arrival order
    (`seq`), until `deadline` (`app/telephony/call_queue.py`)."""

    __tablename__ = "call_waits"
    __table_args__ = (Index("ix_call_waits_line", "account_id", "status", "seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    """Its place in the account's line: one more than the last caller's, taken under the account's lock."""
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    from_number: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(64))
    queue_sid: Mapped[str | None] = mapped_column(String(64))
    """The carrier's queue holding the call (known from its first wait request)."""
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    """`waiting`, `offered` (a place is held for it while the carrier moves it), `connected`,
    `timed_out` or `abandoned` (hung up, or gone)."""
    deadline: Mapped[datetime]
    offered_until: Mapped[datetime | None]
    session_id: Mapped[str | None] = mapped_column(ForeignKey("sessions.id"))
    enqueued_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CallTransfer(Base):
    """A warm transfer: the human's leg dialled for a live call, and what the human hears first.

    Twilio's callbacks for the human's leg may reach any node; the node running the call
    watches `status` (`dialing` → `answered` (→ `announced` once the summary's stream opened) or
    `failed`; `cancelled` when the call ended first)."""

    __tablename__ = "call_transfers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    to_number: Mapped[str] = mapped_column(String(200))
    call_sid: Mapped[str | None] = mapped_column(String(64))
    """The human's leg."""
    summary: Mapped[str] = mapped_column(Text)
    pipeline: Mapped[str | None] = mapped_column(String(200))
    """The config whose TTS speaks the summary in the agent's `voice`; None: Twilio's `<Say>`."""
    voice: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="dialing")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EvalRun(Base):
    """An eval suite run against an agent on the job queue (`app/evals/background.py`)."""

    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """`pending`, `running`, `completed` (every scenario ran; see the results) or `failed`."""
    transport: Mapped[str] = mapped_column(String(16))
    text: Mapped[bool] = mapped_column(Boolean)
    repeat: Mapped[int] = mapped_column(Integer)
    documents: Mapped[list] = mapped_column(JSON)
    """The scenario files, as YAML text."""
    names: Mapped[list | None] = mapped_column(JSON)
    """The scenarios of the files to run, by name (None: all)."""
    total: Mapped[int] = mapped_column(Integer)
    """Calls the run makes: scenarios × repeat."""
    results: Mapped[list] = mapped_column(JSON, default=list)
    """A result per finished call, in order (`ScenarioResult.to_json()`)."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]


class EvalSuite(Base):
    """An agent's stored scenario files, which eval runs may name instead of sending files."""

    __tablename__ = "eval_suites"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    documents: Mapped[list] = mapped_column(JSON)
    """The scenario files, as YAML text."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
