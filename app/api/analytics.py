"""Analytics: the caller's account over a time window, as the dashboard's overview charts it."""

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BeforeValidator

from app import analytics
from app.analytics import Bucket, CallsAnalytics, CostAnalytics, LatencyAnalytics, Window
from app.deps import DbDep, KeyOrLoginCallerDep
from app.errors import ERROR_RESPONSES, not_found
from app.storage import agents as agent_store
from app.storage.ids import utcnow

router = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=ERROR_RESPONSES)


def _not_a_number(value: object) -> object:
    """An ISO 8601 time only: pydantic would also read a number as Unix time."""
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[\d.]+(e[-+]?\d+)?\s*", value, re.I):
        raise ValueError("an ISO 8601 date-time is needed, like 2026-12-01T00:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_not_a_number)]


async def analytics_window(
    db: DbDep,
    caller: KeyOrLoginCallerDep,
    start: Annotated[
        IsoDateTime | None,
        Query(
            alias="from",
            description="Window start, ISO 8601 (UTC if no offset); default: 7 days before `to`",
        ),
    ] = None,
    end: Annotated[
        IsoDateTime | None,
        Query(alias="to", description="Window end, excluded; default: now"),
    ] = None,
    agent_id: Annotated[
        str | None, Query(max_length=40, description="Only this agent's calls (deleted agents too)")
    ] = None,
    bucket: Annotated[Bucket, Query(description="Bucket size, in UTC")] = "day",
) -> Window:
    window = Window.parse(start, end, bucket, agent_id, utcnow())
    if (
        window.agent_id
        and await agent_store.get_agent(db, caller.account_id, window.agent_id) is None
    ):
        raise not_found("agent", window.agent_id)
    return window


WindowDep = Annotated[Window, Depends(analytics_window)]


@router.get("/calls", response_model=CallsAnalytics, summary="Calls per bucket and end reasons")
async def calls(db: DbDep, caller: KeyOrLoginCallerDep, window: WindowDep) -> CallsAnalytics:
    """The account's calls created in the window, failed ones and end reasons: in all and per
    bucket (a call counts in the bucket it was created in)."""
    return await analytics.calls(db, caller.account_id, window)


@router.get(
    "/latency",
    response_model=LatencyAnalytics,
    summary="Voice-to-voice latency p50/p95 per bucket",
)
async def latency(db: DbDep, caller: KeyOrLoginCallerDep, window: WindowDep) -> LatencyAnalytics:
    """Voice-to-voice latency (caller's end of speech → agent's first audio) of the turns of
    the calls created in the window: how many, and their p50 and p95, in all and per bucket."""
    return await analytics.latency(db, caller.account_id, window)


@router.get(
    "/cost", response_model=CostAnalytics, summary="Cost per bucket, by agent and by stage (USD)"
)
async def cost(db: DbDep, caller: KeyOrLoginCallerDep, window: WindowDep) -> CostAnalytics:
    """What the ended calls created in the window cost (USD), in all and per bucket, by agent
    and by stage."""
    return await analytics.cost(db, caller.account_id, window)
