"""The calls running in this process, so an API request or a shutdown can end them."""

import asyncio
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from app.calls.session import CallSession


class CallRegistry:
    def __init__(self):
        self._calls: dict[str, CallSession] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, call: "CallSession") -> None:
        self._calls[call.session_id] = call
        self._empty.clear()

    def remove(self, call: "CallSession") -> None:
        self._calls.pop(call.session_id, None)
        if not self._calls:
            self._empty.set()

    def get(self, session_id: str) -> "CallSession | None":
        return self._calls.get(session_id)

    def __len__(self) -> int:
        return len(self._calls)

    async def end_agent_calls(self, agent_id: str, reason: str) -> int:
        """End every live call of an agent; returns how many."""
        calls = [c for c in self._calls.values() if c.agent_id == agent_id]
        for call in calls:
            await call.end(reason)
        return len(calls)

    async def drain(self, grace_secs: float, goodbye_secs: float = 20) -> None:
        """Let live calls finish for `grace_secs`; then each gets a goodbye and ends
        `server_shutdown`; any still running `goodbye_secs` later is cancelled."""
        await self._wait_until_empty(grace_secs)
        if self._calls:
            logger.info(f"Ending {len(self._calls)} live call(s) for shutdown")
            for call in list(self._calls.values()):
                await call.end_with_goodbye("server_shutdown")
            await self._wait_until_empty(goodbye_secs)
        for call in list(self._calls.values()):
            await call.end("server_shutdown")
        await self._wait_until_empty(5)

    async def _wait_until_empty(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            pass
