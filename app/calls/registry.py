"""The calls running in this process, so an API request or a shutdown can end them."""

import asyncio
from typing import Protocol

from loguru import logger


class LiveCall(Protocol):
    """What the registry needs of a running call (`app.calls.session.CallSession`)."""

    session_id: str
    agent_id: str | None

    async def end(self, reason: str) -> None: ...

    async def end_with_goodbye(self, reason: str) -> None: ...


class CallRegistry:
    def __init__(self):
        self._calls: dict[str, LiveCall] = {}

    def add(self, call: LiveCall) -> None:
        self._calls[call.session_id] = call

    def remove(self, call: LiveCall) -> None:
        self._calls.pop(call.session_id, None)

    def get(self, session_id: str) -> LiveCall | None:
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._calls and loop.time() < deadline:
            await asyncio.sleep(0.1)
