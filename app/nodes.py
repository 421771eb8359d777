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


class Node:
    def __init__(
        self, settings: Settings, db: Database, calls: CallRegistry, on_call_lost: CallLost
    ):
        self.id = f"{settings.node_id}-{secrets.token_hex(4)}"
        self.started_at = utcnow()
        self.load = 0.0
        """CPU use of this process since the last heartbeat, as a share of the machine (0–1)."""
        self._settings = settings
        self._db = db
        self._calls = calls
        self._on_call_lost = on_call_lost
        self._last_cpu = (time.monotonic(), time.process_time())
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
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._last_cpu
        self._last_cpu = (wall, cpu)
        if wall <= last_wall:
            return self.load
        return round(min(1.0, (cpu - last_cpu) / (wall - last_wall) / (os.cpu_count() or 1)), 3)
