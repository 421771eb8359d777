"""This server process as one node of a cluster.

Every process (each worker of `switchboard serve`) is a node with its own id, registered in
the database with a lease it renews every `node_heartbeat_secs`. Each renewal also looks for
nodes whose lease ran out (`node_lease_secs`: killed, frozen, or cut off) and ends the calls
they were running as `failed` / `node_lost`; their transcripts stay. A node shutting down
cleanly gives its lease up, and a restarted process is a new node: it never takes over, or
ends, the calls of a node that is still renewing its lease.
"""

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from app.calls.registry import CallRegistry
from app.settings import Settings
from app.storage import nodes as node_store
from app.storage.db import Database
from app.storage.ids import utcnow

CallLost = Callable[[AsyncSession, str], Awaitable[None]]
"""Adds what follows the end of a lost node's call to the transaction that ends it."""


def new_node_id(settings: Settings) -> str:
    """This process's node id: `SWITCHBOARD_NODE_ID` and a random suffix, so ids never repeat."""
    return f"{settings.node_id}-{secrets.token_hex(4)}"


class Node:
    def __init__(
        self,
        node_id: str,
        settings: Settings,
        db: Database,
        calls: CallRegistry,
        on_call_lost: CallLost,
    ):
        self.id = node_id
        self.started_at = utcnow()
        self.load = 0.0
        """How busy this process was over the last heartbeat (0–1): its event loop's CPU time as
        a share of one core (the loop runs every call's frames) or the whole process's as a share
        of the machine (model threads too), whichever is higher."""
        self._settings = settings
        self._db = db
        self._calls = calls
        self._on_call_lost = on_call_lost
        self._last_cpu: tuple[float, float, float] | None = None
        """Wall clock, process CPU time and event-loop thread CPU time at the last heartbeat."""
        self._heartbeats: asyncio.Task | None = None

    async def start(self) -> None:
        """Register, then keep the lease (and look for lost nodes) in the background."""
        await self._heartbeat()
        self._heartbeats = asyncio.create_task(self._keep_lease())
        logger.info(f"node {self.id} registered")

    async def stop(self) -> None:
        """Give the lease up (if storage is unreachable, it simply runs out)."""
        if self._heartbeats:
            self._heartbeats.cancel()
        try:
            async with self._db.sessions() as db:
                await node_store.remove(db, self.id)
        except Exception as exc:
            logger.warning(
                f"node {self.id}: could not give up its lease ({type(exc).__name__}: {exc})"
            )

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._settings.node_heartbeat_secs)
            try:
                await self._heartbeat()
            except Exception as exc:  # storage hiccup: the lease outlives a few missed beats
                logger.warning(f"node {self.id}: heartbeat failed ({type(exc).__name__}: {exc})")

    async def _heartbeat(self) -> None:
        self.load = self._measure_load()
        async with self._db.sessions() as db:
            await node_store.renew(
                db, self.id, self.started_at, live_calls=len(self._calls), load=self.load
            )
            lost = await node_store.fail_lost_calls(
                db, self._settings.node_lease_secs, self._on_call_lost
            )
        if lost:
            logger.warning(
                f"{len(lost)} call(s) of lost nodes ended failed (node_lost): {', '.join(lost)}"
            )

    def _measure_load(self) -> float:
        """Sampled on the event loop's thread, so `thread_time` is the loop's own CPU time."""
        now = (time.monotonic(), time.process_time(), time.thread_time())
        last, self._last_cpu = self._last_cpu, now
        if last is None or now[0] <= last[0]:
            return self.load
        wall = now[0] - last[0]
        process_share = (now[1] - last[1]) / wall / (os.cpu_count() or 1)
        loop_share = (now[2] - last[2]) / wall
        return round(min(1.0, max(process_share, loop_share)), 3)
