"""What happens around a call that is not the call itself: webhooks as it starts and
turns end, and once it has ended its cost, the `session.ended` webhook, the analysis and
the recording's move to the recording store. Nothing here may delay the call: webhooks and
the analysis are durable jobs (`app/jobs.py`), run by whichever node claims them; the
recording is moved by the node whose disk holds it (a crashed node moves it when it restarts)."""

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from app import analysis as analyser
from app import recordings, webhooks
from app.cost import UsageObserver, merged_pricing, session_cost
from app.jobs import JobQueue
from app.settings import Settings
from app.storage import analysis as analysis_store
from app.storage import recordings as recording_store
from app.storage import sessions as session_store
from app.storage.calls import call_agent
from app.storage.db import Database
from app.storage.models import Agent, Job, Session, SessionAnalysis
from pipelines.config import PipelineCatalog, PipelineConfig

ANALYSIS_JOB = "analysis.run"


async def session_started(
    database: Database, jobs: JobQueue, agent: Agent, session_id: str
) -> None:
    async with database.sessions() as db:
        webhooks.send(jobs, db, agent, "session.started", session_id, {"status": "active"})
        await db.commit()


def turn_recorded(
    jobs: JobQueue,
    db: AsyncSession,
    agent: Agent,
    session_id: str,
    speaker: str,
    content: str,
    interrupted: bool,
) -> None:
    """Add the `transcript.updated` webhook to the transaction that stores the turn."""
    webhooks.send(
        jobs,
        db,
        agent,
        "transcript.updated",
        session_id,
        {"speaker": speaker, "content": content, "interrupted": interrupted},
    )


async def session_finished(
    settings: Settings,
    database: Database,
    jobs: JobQueue,
    agent: Agent,
    config: PipelineConfig,
    session_id: str,
    usage: UsageObserver,
) -> None:
    """Move the call's recording to the recording store, then store the call's cost with the
    jobs that send `session.ended` and analyse the call, in one transaction."""
    await store_recording(settings, database, session_id)
    try:
        async with database.sessions() as db:
            session = await db.get_one(Session, session_id)
            cost = session_cost(
                config,
                merged_pricing(config, settings.pricing),
                usage,
                connection_type=session.connection_type,
                duration_secs=session.duration_secs,
            )
            analysis_store.add_cost(db, session.account_id, session_id, cost)
            analysis_store.start_analysis(db, session.account_id, session_id)
            webhooks.send(jobs, db, agent, "session.ended", session_id, _ended(session, cost))
            enqueue_analysis(jobs, db, session)
            await db.commit()
    except Exception:
        logger.exception(f"session {session_id}: could not store its cost and post-call jobs")


async def call_lost(jobs: JobQueue, db: AsyncSession, session_id: str) -> None:
    """A call whose node was lost ended `node_lost`: add its `session.ended` webhook to `db`'s
    transaction (no cost or analysis: the node that measured the call is gone)."""
    session = await db.get_one(Session, session_id)
    agent = await call_agent(db, session)
    if agent is not None:
        webhooks.send(jobs, db, agent, "session.ended", session_id, _ended(session, None))


async def store_recording(settings: Settings, database: Database, session_id: str) -> None:
    """Move the call's recording from this node's disk to the recording store, if it recorded."""
    try:
        async with database.sessions() as db:
            recorded = await recording_store.status(db, session_id) == "recording"
        if recorded:
            await recordings.finalise_recording(
                settings, database, session_id, recordings.live_path(settings, session_id)
            )
    except Exception:
        logger.exception(
            f"session {session_id}: could not store its recording (kept on this node's disk)"
        )


async def analysis_target(
    catalog: PipelineCatalog, default_pipeline: str, db: AsyncSession, session: Session
) -> tuple[Agent, PipelineConfig]:
    """The agent a session ran (a stand-in if it is gone) and the pipeline config that analyses
    it; UnknownPipelineError if that config no longer exists."""
    agent = await call_agent(db, session) or Agent(
        account_id=session.account_id, language="en", pipeline=default_pipeline
    )
    return agent, catalog.get(agent.pipeline or default_pipeline)


def enqueue_analysis(jobs: JobQueue, db: AsyncSession, session: Session) -> None:
    """Add the job that analyses `session` to `db`'s transaction."""
    call = {"agent_id": session.agent_id, "account_id": session.account_id}
    jobs.enqueue(db, ANALYSIS_JOB, {"session_id": session.id, **call})


async def run_analysis(
    settings: Settings, database: Database, catalog: PipelineCatalog, jobs: JobQueue, job: Job
) -> None:
    """The analysis job: analyse, then store the result with its `analysis.completed`
    webhook. A run that fails outright is retried; the last failure is stored."""
    session_id = job.payload["session_id"]
    try:
        async with database.sessions() as db:
            if (await db.get_one(SessionAnalysis, session_id)).status != "pending":
                return  # stored by a node that died before it could close the job
            session = await db.get_one(Session, session_id)
            agent, config = await analysis_target(catalog, settings.default_pipeline, db, session)
            entries = await session_store.transcript(db, session_id)
        fields = [analyser.AnalysisField(**f) for f in agent.analysis_fields or []]
        result, error, attempts, model = await analyser.analyse(
            config, analyser.transcript_text(entries, session.flow_state), fields, agent.language
        )
    except Exception as exc:
        if job.attempts >= job.max_attempts:
            async with database.sessions() as db:
                await analysis_store.finish_analysis(
                    db,
                    session_id,
                    result=None,
                    error=f"{type(exc).__name__}: {exc}",
                    attempts=0,
                    model=None,
                )
                await db.commit()
        raise
    async with database.sessions() as db:
        await analysis_store.finish_analysis(
            db, session_id, result=result, error=error, attempts=attempts, model=model
        )
        if result is not None:
            webhooks.send(jobs, db, agent, "analysis.completed", session_id, {"analysis": result})
        await db.commit()
    if result is None:
        logger.warning(f"session {session_id}: analysis failed: {error}")
    else:
        logger.info(f"session {session_id}: analysis completed")


def _ended(session: Session, cost: dict | None) -> dict:
    state = session.flow_state
    flow = {"flow": {"path": state["path"], "values": state["values"]}} if state else {}
    return {
        "status": session.status,
        "end_reason": session.end_reason,
        "duration_secs": session.duration_secs,
        "started_at": session.started_at.isoformat() if session.started_at else None,
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "error": session.error,
        "cost": cost,
        **flow,
    }
