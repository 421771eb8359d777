"""The calls running in this process, so an API request can end one."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.calls.session import CallSession


class CallRegistry:
    def __init__(self):
        self._calls: dict[str, "CallSession"] = {}

    def add(self, call: "CallSession") -> None:
        self._calls[call.session_id] = call

    def remove(self, call: "CallSession") -> None:
        self._calls.pop(call.session_id, None)

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
