"""What happens around a call that is not the call itself: webhooks as it starts and
turns end, and once it has ended its cost, the `session.ended` webhook and the analysis.
Nothing here may delay the call: webhooks and the analysis run in background tasks."""

import asyncio

from loguru import logger

from app import analysis as analyser
from app import recordings
from app import webhooks
from app.cost import UsageObserver, merged_pricing, session_cost
from app.state import AppState
from app.storage import analysis as analysis_store
from app.storage import recordings as recording_store
from app.storage import sessions as session_store
from app.storage.models import Agent, Session
from pipelines.config import PipelineConfig

_TASKS: set[asyncio.Task] = set()
"""Analyses in flight (held so they aren't garbage-collected)."""


def session_started(state: AppState, agent: Agent, session_id: str) -> None:
    webhooks.send(state, agent, "session.started", session_id, {"status": "active"})


def turn_recorded(state: AppState, agent: Agent, session_id: str, speaker: str, content: str, interrupted: bool) -> None:
    webhooks.send(state, agent, "transcript.updated", session_id,
                  {"speaker": speaker, "content": content, "interrupted": interrupted})


async def session_finished(
    state: AppState, agent: Agent, config: PipelineConfig, session_id: str, usage: UsageObserver
) -> None:
    """Store the ended call's recording and cost, then send `session.ended` and analyse it in the background."""
    await store_recording(state, session_id)
    try:
        async with state.db.sessions() as db:
            session = await db.get(Session, session_id)
            cost = session_cost(
                config, merged_pricing(config, state.settings.pricing), usage,
                connection_type=session.connection_type, duration_secs=session.duration_secs,
            )
            await analysis_store.save_cost(db, session.account_id, session_id, cost)
            await analysis_store.start_analysis(db, session.account_id, session_id)
    except Exception:
        logger.exception(f"session {session_id}: could not store its cost")
        return
    webhooks.send(state, agent, "session.ended", session_id, _ended(session, cost))
    start_analysis(state, agent, config, session_id)


async def store_recording(state: AppState, session_id: str) -> None:
    """Move the call's recording from this node's disk to the recording store, if it recorded."""
    try:
        async with state.db.sessions() as db:
            recorded = await recording_store.status(db, session_id) == "recording"
        if recorded:
            await recordings.finalise_recording(
                state.settings, state.db, session_id, recordings.live_path(state.settings, session_id)
            )
    except Exception:
        logger.exception(f"session {session_id}: could not store its recording (kept on this node's disk)")


def start_analysis(state: AppState, agent: Agent, config: PipelineConfig, session_id: str) -> None:
    """Analyse a session in the background; its row must already be `pending`."""
    task = asyncio.create_task(_analyse(state, agent, config, session_id), name=f"analysis-{session_id}")
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def _analyse(state: AppState, agent: Agent, config: PipelineConfig, session_id: str) -> None:
    async with state.db.sessions() as db:
        entries = await session_store.transcript(db, session_id)
    fields = [analyser.AnalysisField(**f) for f in agent.analysis_fields or []]
    result, error, attempts, model = await analyser.analyse(
        config, analyser.transcript_text(entries), fields, agent.language
    )
    async with state.db.sessions() as db:
        await analysis_store.finish_analysis(
            db, session_id, result=result, error=error, attempts=attempts, model=model
        )
    if result is None:
        logger.warning(f"session {session_id}: analysis failed: {error}")
        return
    logger.info(f"session {session_id}: analysis completed")
    webhooks.send(state, agent, "analysis.completed", session_id, {"analysis": result})


def _ended(session: Session, cost: dict) -> dict:
    return {
        "status": session.status, "end_reason": session.end_reason, "duration_secs": session.duration_secs,
        "started_at": session.started_at.isoformat() if session.started_at else None,
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "error": session.error, "cost": cost,
    }
