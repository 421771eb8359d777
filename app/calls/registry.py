"""The calls running in this process, so an API request or a shutdown can end them, and the
places admission holds for calls about to start here (the per-worker cap counts both)."""

import asyncio
import time
from typing import Protocol

from loguru import logger


class LiveCall(Protocol):
    """What the registry needs of a running call (`app.calls.session.CallSession`)."""

    @property
    def session_id(self) -> str: ...

    @property
    def agent_id(self) -> str | None: ...

    async def end(self, reason: str) -> None: ...

    async def end_with_goodbye(self, reason: str, goodbye: str = ...) -> None: ...


class CallRegistry:
    HOLD_SECS = 30
    """How long a place held for a call stays taken if the call never starts here."""

    def __init__(self):
        self._calls: dict[str, LiveCall] = {}
        self._held: dict[str, float] = {}
        """Session id → when its place lapses: admitted here, not running yet."""
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, call: LiveCall) -> None:
        self._calls[call.session_id] = call
        self._held.pop(call.session_id, None)
        self._empty.clear()

    def remove(self, call: LiveCall) -> None:
        self._calls.pop(call.session_id, None)
        self._held.pop(call.session_id, None)
        if not self._calls:
            self._empty.set()

    def hold(self, session_id: str) -> None:
        """Keep a place for a call admitted to this process until it runs (or `HOLD_SECS`)."""
        self._held[session_id] = time.monotonic() + self.HOLD_SECS

    def release(self, session_id: str) -> None:
        """Give back the place of a call that will not start here after all."""
        self._held.pop(session_id, None)

    def taken(self, besides: str | None = None) -> int:
        """Places taken by running calls and held ones, but `besides`'s."""
        now = time.monotonic()
        for session_id in [s for s, lapses in self._held.items() if lapses <= now]:
            del self._held[session_id]
        places = self._calls.keys() | self._held.keys()
        return len(places - {besides})

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

    async def end_call(self, session_id: str, reason: str, goodbye: str | None = None) -> None:
        """End the call of `session_id` if it runs here (after saying `goodbye`, if given)."""
        if call := self._calls.get(session_id):
            if goodbye:
                await call.end_with_goodbye(reason, goodbye)
            else:
                await call.end(reason)

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
