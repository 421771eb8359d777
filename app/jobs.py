"""Durable jobs for work done after (or around) a call: webhook deliveries and analyses.

A job is a row in the `jobs` table, written in the same transaction as the change that
calls for it. Every node runs one worker loop (started in the app's lifespan) that claims
due jobs, runs them and records the outcome. A claim is a lease (`locked_until`) that the
running node keeps renewing; a job whose node died is taken over by any node once its
lease runs out. A failed run is retried after `webhook_backoff_secs`, doubling each
time, until `webhook_max_attempts`; then the job is `failed`, its last error kept. Done
jobs are deleted (what they did is recorded where it belongs: deliveries, analyses).

Why not a library: procrastinate is PostgreSQL-only, saq, arq and dramatiq need Redis or
a broker, huey is thread-based with no lease take-over; a laptop runs SQLite alone. This
one table works the same on SQLite and PostgreSQL; on PostgreSQL the claim reads with
`FOR UPDATE SKIP LOCKED`, so nodes never wait on each other's claims, and on both the claim
is a conditional UPDATE that only one node can win.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from loguru import logger
from sqlalchemy import delete, event, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.logs import bind_call
from app.settings import Settings
from app.storage.db import Database
from app.storage.ids import new_id, utcnow
from app.storage.models import Job
from app.tracing import tracer

Handler = Callable[[Job], Awaitable[None]]
GaveUp = Callable[[Job, str], Awaitable[None]]
"""What a job's kind does once it is given up (with its last error), so what it was keeping
going (a campaign's scheduling chain, say) doesn't wait on it forever."""
CONCURRENCY = 16
"""Jobs one node runs at once."""


class JobQueue:
    """Enqueues jobs, and runs this node's worker loop."""

    def __init__(self, db: Database, settings: Settings):
        self._db = db
        self._settings = settings
        self.node_id = new_id("node")
        self._handlers: dict[str, Handler] = {}
        self._gave_up: dict[str, GaveUp] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._closing = False

    def enqueue(self, db: AsyncSession, kind: str, payload: dict, delay: float = 0) -> None:
        """Add a job to `db`'s transaction, due in `delay` seconds; this node's worker wakes
        once it commits (and again when it is due)."""
        db.add(
            Job(
                id=new_id("job"),
                kind=kind,
                payload=payload,
                status="pending",
                attempts=0,
                max_attempts=self._settings.webhook_max_attempts,
                run_at=utcnow() + timedelta(seconds=delay),
            )
        )
        event.listen(
            db.sync_session, "after_commit", lambda _session: self._wake_in(delay), once=True
        )

    @staticmethod
    async def is_pending(
        db: AsyncSession, kind: str, key: str, value: str, besides: str | None = None
    ) -> bool:
        """Whether a job of `kind` whose payload's `key` is `value` waits or runs (but `besides`)."""
        query = select(Job.id).where(
            Job.kind == kind, Job.status == "pending", Job.payload[key].as_string() == value
        )
        if besides:
            query = query.where(Job.id != besides)
        return await db.scalar(query.limit(1)) is not None

    def _wake_in(self, delay: float) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        else:
            self._wake.set()

    def start(self, handlers: dict[str, Handler], gave_up: dict[str, GaveUp] | None = None) -> None:
        self._handlers = handlers
        self._gave_up = gave_up or {}
        self._loop_task = asyncio.create_task(self._work(), name="jobs")

    async def close(self) -> None:
        """Stop claiming; jobs cut off here are handed back for any node to run at once."""
        self._closing = True
        self._wake.set()
        await self._cut_off()  # frees the slots, so the loop sees `_closing`
        if self._loop_task:
            await self._loop_task
        await self._cut_off()  # any claimed meanwhile

    async def _cut_off(self) -> None:
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            await self._slots.acquire()
            if self._closing:
                return
            try:
                job = await self._claim()
            except Exception:
                logger.exception("jobs: claim failed")
                job = None
            if job is None:
                self._slots.release()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._settings.job_poll_secs)
                except TimeoutError:
                    pass
                continue
            task = asyncio.create_task(self._run(job), name=f"job-{job.kind}-{job.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _claim(self) -> Job | None:
        now = utcnow()
        free = or_(Job.locked_until.is_(None), Job.locked_until < now)
        async with self._db.sessions() as db:
            job_id = await db.scalar(
                select(Job.id)
                .where(Job.status == "pending", Job.run_at <= now, free)
                .order_by(Job.run_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if job_id is None:
                return None
            claimed = await db.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "pending", free)
                .values(
                    locked_by=self.node_id,
                    locked_until=now + self._lease,
                    attempts=Job.attempts + 1,
                )
            )
            job = await db.get(Job, job_id) if claimed.rowcount == 1 else None  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult
            await db.commit()
            return job

    async def _run(self, job: Job) -> None:
        renewing = asyncio.create_task(self._renew(job.id))
        try:
            attributes: dict[str, str | int] = {"job.id": job.id, "job.attempt": job.attempts}
            with tracer.start_as_current_span(f"job {job.kind}", attributes=attributes):
                if session_id := job.payload.get("session_id"):  # a call's job: tag its lines
                    bind_call(
                        session_id, job.payload.get("agent_id"), job.payload.get("account_id")
                    )
                await self._handlers[job.kind](job)
        except asyncio.CancelledError:
            await self._settle(
                job, values={"locked_until": None, "run_at": utcnow(), "attempts": Job.attempts - 1}
            )
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if job.attempts >= job.max_attempts:
                logger.warning(
                    f"job {job.id} ({job.kind}) gave up after {job.attempts} attempts: {error}"
                )
                await self._settle(
                    job, values={"status": "failed", "locked_until": None, "last_error": error}
                )
                if gave_up := self._gave_up.get(job.kind):
                    try:
                        await gave_up(job, error)
                    except Exception:
                        logger.exception(f"job {job.id} ({job.kind}): its give-up failed too")
            else:
                delay = self._settings.webhook_backoff_secs * 2 ** (job.attempts - 1)
                logger.info(
                    f"job {job.id} ({job.kind}) attempt {job.attempts} failed, retrying in {delay:g}s: {error}"
                )
                await self._settle(
                    job,
                    values={
                        "locked_until": None,
                        "last_error": error,
                        "run_at": utcnow() + timedelta(seconds=delay),
                    },
                )
                self._wake_in(delay)
        else:
            await self._settle(job)
        finally:
            renewing.cancel()
            self._slots.release()

    async def _settle(self, job: Job, values: dict | None = None) -> None:
        """Record a run's outcome (no `values`: done, so deleted), unless another node has
        taken the job over meanwhile."""
        mine = (Job.id == job.id) & (Job.locked_by == self.node_id)
        async with self._db.sessions() as db:
            await db.execute(
                update(Job).where(mine).values(**values) if values else delete(Job).where(mine)
            )
            await db.commit()

    async def _renew(self, job_id: str) -> None:
        """Keep the lease of a running job."""
        while True:
            await asyncio.sleep(self._settings.job_lease_secs / 3)
            try:
                async with self._db.sessions() as db:
                    await db.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.locked_by == self.node_id)
                        .values(locked_until=utcnow() + self._lease)
                    )
                    await db.commit()
            except Exception:
                logger.exception(f"job {job_id}: could not renew its lease")

    @property
    def _lease(self) -> timedelta:
        return timedelta(seconds=self._settings.job_lease_secs)
