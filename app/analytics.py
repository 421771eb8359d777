"""Account analytics over a time window, in hour or day buckets (UTC): calls and how they
ended, voice-to-voice latency percentiles, and cost by agent and by stage. A call counts in
the bucket it was created in."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.calls.latency import percentile
from app.errors import APIError
from app.storage import analytics as analytics_store
from app.storage import dashboard as dashboard_store
from app.storage import sessions as session_store

Bucket = Literal["hour", "day"]
BUCKET_SIZES: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = 744
"""A window holds at most this many buckets (31 days of hours, about two years of days)."""
INLINE = "inline"
"""The agent key of inline calls (`POST /v1/calls/inline`), which have no stored agent."""


@dataclass(frozen=True)
class Window:
    """The calls an analytics request covers: created in [start, end), of one agent or all."""

    start: datetime
    end: datetime
    bucket: Bucket
    agent_id: str | None

    @classmethod
    def parse(
        cls,
        start: datetime | None,
        end: datetime | None,
        bucket: Bucket,
        agent_id: str | None,
        now: datetime,
    ) -> "Window":
        """A window from request parameters (naive times are UTC; by default the last 7 days
        up to now); 422 when it is empty or holds too many buckets."""
        end = _utc(end) if end else now
        start = _utc(start) if start else end - timedelta(days=7)
        if start >= end:
            raise APIError(422, "invalid_window", "`from` must be before `to`")
        window = cls(start, end, bucket, agent_id or None)
        if len(window.bucket_starts()) > MAX_BUCKETS:
            raise APIError(
                422,
                "window_too_large",
                f"the window spans more than {MAX_BUCKETS} {bucket}s; narrow it or use bigger buckets",
                {"max_buckets": MAX_BUCKETS},
            )
        return window

    def floor(self, moment: datetime) -> datetime:
        """The start of the bucket `moment` falls in."""
        moment = _utc(moment).replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0) if self.bucket == "day" else moment

    def bucket_starts(self) -> list[datetime]:
        step, moment = BUCKET_SIZES[self.bucket], self.floor(self.start)
        starts: list[datetime] = []
        while moment < self.end and len(starts) <= MAX_BUCKETS:
            starts.append(moment)
            moment += step
        return starts


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class WindowOut(BaseModel):
    start: datetime = Field(description="`from`: the window's start (UTC)")
    end: datetime = Field(description="`to`: the window's end, excluded (UTC)")
    bucket: Bucket
    agent_id: str | None = Field(description="The agent the window is limited to; null: all")


class CallsBucket(BaseModel):
    start: datetime = Field(description="The bucket's start (UTC)")
    calls: int = Field(description="Calls created in the bucket")
    failed: int = Field(
        description="Of those, how many failed: ended `failed` (an error, a dropped connection) "
        "or on a provider's failure (`provider_error`)"
    )
    end_reasons: dict[str, int] = Field(description="Ended calls by end reason")


class CallsAnalytics(WindowOut):
    calls: int
    failed: int
    end_reasons: dict[str, int] = Field(description="Ended calls in the window by end reason")
    buckets: list[CallsBucket]


class LatencyBucket(BaseModel):
    start: datetime
    turns: int = Field(description="Turns measured (caller end of speech to agent audio)")
    p50_secs: float | None = Field(description="Median voice-to-voice latency; null: no turns")
    p95_secs: float | None


class LatencyAnalytics(WindowOut):
    turns: int
    p50_secs: float | None
    p95_secs: float | None
    buckets: list[LatencyBucket]


class CostBucket(BaseModel):
    start: datetime
    total: float
    by_agent: dict[str, float] = Field(description=f"By agent id (`{INLINE}`: inline calls)")
    by_stage: dict[str, float] = Field(description="By stage: stt, llm, tts, telephony")


class CostAnalytics(WindowOut):
    currency: str
    total: float
    by_agent: dict[str, float]
    by_stage: dict[str, float]
    agent_names: dict[str, str] = Field(description="The name of each agent in `by_agent`")
    buckets: list[CostBucket]


def _window_out(window: Window) -> dict:
    return {
        "start": window.start,
        "end": window.end,
        "bucket": window.bucket,
        "agent_id": window.agent_id,
    }


async def calls(db: AsyncSession, account_id: str, window: Window) -> CallsAnalytics:
    await session_store.expire_stale(db)
    rows = await analytics_store.calls(db, account_id, window.start, window.end, window.agent_id)
    buckets = {
        start: CallsBucket(start=start, calls=0, failed=0, end_reasons={})
        for start in window.bucket_starts()
    }
    for created, failed, end_reason in rows:
        bucket = buckets[window.floor(created)]
        bucket.calls += 1
        bucket.failed += failed
        if end_reason:
            bucket.end_reasons[end_reason] = bucket.end_reasons.get(end_reason, 0) + 1
    reasons: Counter[str] = Counter()
    for bucket in buckets.values():
        reasons.update(bucket.end_reasons)
    return CallsAnalytics(
        **_window_out(window),
        calls=len(rows),
        failed=sum(b.failed for b in buckets.values()),
        end_reasons=dict(reasons.most_common()),
        buckets=list(buckets.values()),
    )


async def latency(db: AsyncSession, account_id: str, window: Window) -> LatencyAnalytics:
    rows = await analytics_store.latencies(
        db, account_id, window.start, window.end, window.agent_id
    )
    turns: dict[datetime, list[float]] = {start: [] for start in window.bucket_starts()}
    for created, record in rows:
        turns[window.floor(created)].extend(t["voice_to_voice_secs"] for t in record["turns"])
    every_turn = [secs for values in turns.values() for secs in values]
    return LatencyAnalytics(
        **_window_out(window),
        turns=len(every_turn),
        p50_secs=percentile(every_turn, 50),
        p95_secs=percentile(every_turn, 95),
        buckets=[
            LatencyBucket(
                start=start,
                turns=len(values),
                p50_secs=percentile(values, 50),
                p95_secs=percentile(values, 95),
            )
            for start, values in turns.items()
        ],
    )


def _add(totals: dict[str, float], key: str, amount: float) -> None:
    totals[key] = round(totals.get(key, 0.0) + amount, 6)


async def cost(db: AsyncSession, account_id: str, window: Window) -> CostAnalytics:
    rows = await analytics_store.costs(db, account_id, window.start, window.end, window.agent_id)
    buckets = {
        start: CostBucket(start=start, total=0.0, by_agent={}, by_stage={})
        for start in window.bucket_starts()
    }
    by_agent: dict[str, float] = defaultdict(float)
    by_stage: dict[str, float] = defaultdict(float)
    for created, agent_id, session_cost in rows:
        bucket = buckets[window.floor(created)]
        bucket.total = round(bucket.total + session_cost["total"], 6)
        _add(bucket.by_agent, agent_id or INLINE, session_cost["total"])
        for line in session_cost["breakdown"]:
            _add(bucket.by_stage, line["stage"], line["amount"])
    for bucket in buckets.values():
        for agent, amount in bucket.by_agent.items():
            _add(by_agent, agent, amount)
        for stage, amount in bucket.by_stage.items():
            _add(by_stage, stage, amount)
    names = await dashboard_store.agent_names(db, account_id)
    return CostAnalytics(
        **_window_out(window),
        currency="USD",
        total=round(sum(b.total for b in buckets.values()), 6),
        by_agent=dict(by_agent),
        by_stage=dict(by_stage),
        agent_names={agent: names.get(agent, agent) for agent in by_agent},
        buckets=list(buckets.values()),
    )
