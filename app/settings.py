"""Typed settings, read once from the environment and `.env`."""

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IceServer(BaseModel):
    """One STUN or TURN server, in the browser's `RTCIceServer` shape."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


class Settings(BaseSettings):
    """Everything the server can be configured with. Env names are `SWITCHBOARD_<FIELD>`
    unless an alias says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    api_key: str | None = None
    secret_key: str | None = None
    """Signs session and relay tokens; required in production (without it a secret is generated
    and stored in the database, with a warning at start). Never logged."""
    previous_secret_keys: list[str] = Field(default_factory=list)
    """Earlier `SWITCHBOARD_SECRET_KEY` values (JSON list): tokens they signed still verify,
    new tokens use the current key. Drop them once those tokens have expired."""
    public_base_url: str | None = None

    default_pipeline: str = "local"
    pipelines_path: list[Path] = Field(default_factory=list)
    preload_pipelines: list[str] = Field(default_factory=lambda: ["local"])

    session_connect_ttl_secs: int = 15 * 60
    resume_grace_secs: float = 60
    """How long a direct-WebSocket session whose client dropped waits for it to reconnect."""

    max_body_bytes: int = 1 << 20
    rate_limit_per_minute: int = 600
    """Requests per API key per minute on the REST API (0 turns the limit off)."""
    max_concurrent_calls: int = 20
    """Live calls per account unless the account sets its own cap."""
    max_waiting_calls: int = Field(default=50, ge=0)
    """Phone callers one account may have waiting in line for a place (agents with `overflow:
    queue`); a caller beyond it gets busy, as without a line."""
    max_calls_per_worker: int = Field(default=5, ge=0)
    """Live calls one server process (worker) takes before it refuses new ones (503
    `server_busy`, WebSocket 1013, a Twilio call rejected busy); 0 turns the cap off. The default
    is what the capacity benchmark holds per worker on 2 cores with instant services
    (10 calls on `--workers 2`; see the README's performance section)."""
    load_threshold: float = Field(default=0.9, gt=0)
    """A worker whose load (`/health` `load`: its event loop's CPU share of a core, or the process's
    share of the machine, whichever is higher, over the last heartbeat) is above this refuses new
    calls as when it is at `max_calls_per_worker`; 1 or more turns this check off."""
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """The least severe log line written; what callers and agents say is logged only at DEBUG."""
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per line (for log shippers), with the call's ids as fields."""

    redis_url: str | None = None
    """Shares rate-limit windows and call control between server processes when set."""
    redis_prefix: str = "switchboard"
    """Prefix of every Redis key and channel, so several deployments can share one Redis."""
    drain_grace_secs: float = 30
    """On SIGTERM, how long live calls may go on before they get a goodbye."""
    node_id: str = Field(default_factory=socket.gethostname)
    """Prefix of this node's id; each server process (worker) adds a random suffix, so ids never repeat."""
    node_heartbeat_secs: float = 5
    """How often each node renews its lease (and looks for nodes whose lease ran out)."""
    node_lease_secs: float = 30
    """A node not heard from for this long is lost: its live calls end `failed` / `node_lost`."""
    dashboard_session_secs: int = 12 * 3600
    """How long a dashboard log-in lasts."""
    dashboard_login_failures_per_minute: int = 10
    """Failed dashboard log-ins per client IP per minute before log-in answers 429."""
    webrtc_ice_servers: list[IceServer] = Field(default_factory=list)
    """STUN/TURN servers for browser calls, as JSON (`[{"urls": "stun:host:3478"}]`);
    none are needed on localhost or a LAN."""

    recordings_url: str | None = None
    """Where finished recordings are kept: a directory (a path or `file:///…`) or an S3-compatible
    bucket and key prefix (`s3://bucket/prefix`); `recordings/` in the data dir if unset. A call writes
    its WAV on the local disk while it runs and moves it here when it ends."""
    recordings_s3_endpoint_url: str | None = None
    """The S3-compatible store's URL (MinIO, R2, …); AWS S3 if unset."""
    recordings_s3_region: str | None = None
    recordings_s3_access_key_id: str | None = None
    recordings_s3_secret_access_key: str | None = None
    """S3 credentials; boto3's own lookup (`AWS_*` variables, instance role) if unset."""
    recording_retention_days: float | None = None
    """Recordings older than this many days are deleted (kept for ever if unset)."""
    recording_sweep_secs: float = 3600
    """How often each server process looks for recordings past their retention."""
    recording_quota_bytes: int | None = None
    """Recording storage per account unless the account sets its own (no cap if unset): an account
    at or over it gets its new calls unrecorded."""

    pricing: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    """Price overrides, USD per unit as provider → model → unit, merged over each
    pipeline config's `pricing` (JSON, e.g. `{"anthropic": {"claude-sonnet-4-5": {"input_mtok": 3}}}`)."""
    webhook_timeout_secs: float = 10
    webhook_max_attempts: int = 5
    """Attempts of a webhook delivery (or any post-call job) before it is given up as failed."""
    webhook_backoff_secs: float = 2
    """Wait before a webhook's (or any post-call job's) first retry; it doubles for each later one."""
    job_lease_secs: float = 30
    """How long a node holds a post-call job without renewing it; a job whose node died is
    taken over by another node (or the restarted one) once its lease has run out."""
    job_poll_secs: float = 1
    """How often a node's job worker looks for due jobs (it also wakes when it enqueues one)."""
    eval_llm_url: str | None = None
    """The OpenAI-compatible server (`…/v1`) that judges and plays simulated callers in eval runs
    started through the API (a local llama.cpp server, or a hosted model); without it, API runs
    take only scenarios that need no LLM."""
    eval_llm_model: str = "local"
    eval_llm_api_key: str = "none"
    outbound_allow: list[str] = Field(default_factory=list)
    """Host names, addresses and CIDR networks that webhook tools and agent webhooks may reach
    although they are private or local (JSON, e.g. `["10.20.0.0/16", "crm.internal"]`); none by default."""
    dial_countries: list[str] = Field(default_factory=lambda: ["US", "CA"])
    """Regions (ISO 3166 codes, e.g. `["US", "CA", "GB"]`) whose phone numbers outbound calls and
    `transfer_call` tools may dial; anything else, premium-rate islands sharing +1 included, is refused."""
    allow_sip_transfer: bool = False
    """Lets `transfer_call` tools name a SIP URI (`sip:user@host`) instead of a phone number."""

    insecure_unsigned_carrier_webhooks: bool = False
    """Development only: accept carrier webhooks without a signature when the carrier's
    signing credential (TWILIO_AUTH_TOKEN, TELNYX_PUBLIC_KEY, PLIVO_AUTH_TOKEN) is not set."""

    twilio_account_sid: str | None = Field(default=None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(default=None, alias="TWILIO_AUTH_TOKEN")
    """Also checks `X-Twilio-Signature` on Twilio's webhooks (refused without it)."""
    twilio_api_key_sid: str | None = Field(default=None, alias="TWILIO_API_KEY_SID")
    twilio_api_key_secret: str | None = Field(default=None, alias="TWILIO_API_KEY_SECRET")
    twilio_api_base_url: str = Field(default="https://api.twilio.com", alias="TWILIO_API_BASE_URL")
    """Twilio's REST API root (outbound calls, hang-up); tests point it at a local stand-in."""
    twilio_from_number: str | None = Field(default=None, alias="TWILIO_FROM_NUMBER")
    """Caller ID for outbound calls when neither the request nor the agent names one."""
    telnyx_api_key: str | None = Field(default=None, alias="TELNYX_API_KEY")
    telnyx_public_key: str | None = Field(default=None, alias="TELNYX_PUBLIC_KEY")
    """The account's webhook public key (base64 Ed25519): checks `telnyx-signature-ed25519`."""
    plivo_auth_id: str | None = Field(default=None, alias="PLIVO_AUTH_ID")
    plivo_auth_token: str | None = Field(default=None, alias="PLIVO_AUTH_TOKEN")
    """Also checks `X-Plivo-Signature-V3` on Plivo's webhooks."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value):
        return value.upper() if isinstance(value, str) else value

    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: `DATABASE_URL` if set, else a SQLite file in the data dir."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'switchboard.db'}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings object."""
    return Settings()
