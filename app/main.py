"""The FastAPI application: routes, error handling and start-up."""

import asyncio
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from loguru import logger
from redis.asyncio import Redis

from app import campaigns, recordings, webhooks
from app.api import accounts as accounts_api
from app.api import (
    agents,
    analytics,
    calls,
    carriers,
    dashboard,
    health,
    instances,
    metrics,
    session_ws,
    sessions,
    transfers,
    twilio,
    webrtc,
)
from app.api import analysis as analysis_api
from app.api import (
    campaigns as campaigns_api,
)
from app.api import evals as evals_api
from app.calls import post_call
from app.calls.control import CallControl
from app.calls.registry import CallRegistry
from app.calls.tokens import TokenSigner
from app.errors import install_error_handlers
from app.evals import background as evals_background
from app.jobs import JobQueue
from app.limits import BodySizeLimitMiddleware, RateLimiter
from app.logs import configure_logging
from app.nodes import Node, new_node_id
from app.settings import Settings, get_settings
from app.shutdown import install_drain_on_signals
from app.state import AppState
from app.storage import accounts
from app.storage.db import Database
from app.telephony import call_queue
from app.telephony.signatures import warn_if_insecure
from app.tracing import start_tracing, stop_tracing
from pipelines import services
from pipelines.config import PipelineCatalog, PipelineConfigError, UnknownPipelineError


def check_pipelines(catalog: PipelineCatalog, preload: list[str]) -> None:
    """Load every pipeline config: one the server is told to preload that doesn't load stops
    it (PipelineConfigError); others that don't are logged, listed with their error by
    `GET /v1/pipelines`, and refuse their calls before they start."""
    for name, loaded in catalog.load_all().items():
        if isinstance(loaded, PipelineConfigError):
            if name in preload:
                raise loaded
            logger.error(f"pipeline '{name}' does not load; its calls are refused: {loaded}")


def preload_models(catalog: PipelineCatalog, names: list[str]) -> None:
    """Load the local models of the named pipelines once, before the first call."""
    for name in names:
        try:
            services.preload(catalog.get(name))
        except UnknownPipelineError:
            logger.warning(f"not preloading unknown pipeline '{name}'")


async def prepare_storage(db: Database, settings: Settings) -> TokenSigner:
    """Migrate, make sure the admin key exists (a generated one is printed, once), and
    return the token signer. Safe to run from several processes at once."""
    await db.migrate()
    async with db.sessions() as session:
        generated = await accounts.ensure_bootstrap_key(session, settings.api_key)
        secret = settings.secret_key
        if not secret:
            logger.warning(
                "SWITCHBOARD_SECRET_KEY is not set: signing tokens with a secret generated and stored in the "
                "database; set SWITCHBOARD_SECRET_KEY in production"
            )
            secret = await accounts.server_secret(session, "token_signing")
    if generated:
        print(f"\n  Generated admin API key (shown once, store it now): {generated}\n", flush=True)
    return TokenSigner(secret, settings.previous_secret_keys)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    node_id = new_node_id(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        db = Database(settings.resolved_database_url())
        warn_if_insecure(settings)
        tokens = await prepare_storage(db, settings)
        catalog = PipelineCatalog(settings.pipelines_path)
        check_pipelines(catalog, settings.preload_pipelines)
        await asyncio.to_thread(preload_models, catalog, settings.preload_pipelines)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        calls = CallRegistry()
        control = CallControl(calls, redis, settings.redis_prefix)
        await control.start()
        jobs = JobQueue(db, settings)
        node = Node(
            node_id,
            settings,
            db,
            calls,
            on_call_lost=partial(post_call.call_lost, jobs),
        )
        app.state.switchboard = AppState(
            settings=settings,
            db=db,
            catalog=catalog,
            tokens=tokens,
            rate_limiter=RateLimiter(settings.rate_limit_per_minute, redis, settings.redis_prefix),
            login_limiter=RateLimiter(
                settings.dashboard_login_failures_per_minute,
                redis,
                f"{settings.redis_prefix}:login",
            ),
            calls=calls,
            control=control,
            node=node,
            jobs=jobs,
        )
        await node.start()
        jobs.start(
            {
                webhooks.JOB_KIND: partial(webhooks.deliver, settings, db),
                post_call.ANALYSIS_JOB: partial(
                    post_call.run_analysis, settings, db, catalog, jobs
                ),
                campaigns.TICK_JOB: partial(campaigns.run_tick, app.state.switchboard),
                campaigns.DIAL_JOB: partial(campaigns.run_dial, app.state.switchboard),
                campaigns.OUTCOME_JOB: partial(campaigns.run_outcome, app.state.switchboard),
                call_queue.PUMP_JOB: partial(call_queue.run_pump, app.state.switchboard),
                evals_background.RUN_JOB: partial(evals_background.run, app.state.switchboard),
            },
            gave_up={campaigns.TICK_JOB: partial(campaigns.tick_gave_up, app.state.switchboard)},
        )
        install_drain_on_signals(app.state.switchboard)
        sweeper = asyncio.create_task(
            recordings.sweep_forever(settings, db), name="recording-retention"
        )
        logger.info(f"Switchboard ready (node {node.id}; pipelines: {', '.join(catalog.names())})")
        try:
            yield
        finally:
            sweeper.cancel()
            await jobs.close()
            await node.stop()
            await control.close()
            if redis is not None:
                await redis.aclose()
            await db.dispose()
            stop_tracing()

    app = FastAPI(
        title="Switchboard",
        version="0.1.0",
        description="Open-source voice-agent server built on Pipecat.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    start_tracing(app, node_id)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(accounts_api.router)
    app.include_router(agents.router)
    app.include_router(sessions.router)
    app.include_router(analysis_api.router)
    app.include_router(analytics.router)
    app.include_router(calls.router)
    app.include_router(campaigns_api.router)
    app.include_router(evals_api.router)
    app.include_router(session_ws.router)
    app.include_router(instances.router)
    app.include_router(twilio.router)
    app.include_router(transfers.router)
    app.include_router(carriers.router)
    app.include_router(webrtc.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files, name="static")
    return app
