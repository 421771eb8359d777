"""Ending calls wherever they run: in this process directly, in every server process
through Redis pub/sub when `SWITCHBOARD_REDIS_URL` is set (several workers or hosts)."""

import asyncio
import json

from loguru import logger

from app.calls.registry import CallRegistry


class CallControl:
    def __init__(self, registry: CallRegistry, redis=None, redis_prefix: str = "switchboard"):
        self._registry = registry
        self._redis = redis
        self._channel = f"{redis_prefix}:calls:end"
        self._listener: asyncio.Task | None = None

    async def start(self) -> None:
        if self._redis is None:
            return
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self._channel)
        self._listener = asyncio.create_task(self._listen(pubsub))

    async def end_agent_calls(self, agent_id: str, reason: str) -> None:
        """End every live call of the agent, in whichever process runs it."""
        if self._redis is None:
            await self._registry.end_agent_calls(agent_id, reason)
        else:
            await self._redis.publish(
                self._channel, json.dumps({"agent_id": agent_id, "reason": reason})
            )

    async def end_call(self, session_id: str, reason: str, goodbye: str | None = None) -> None:
        """End one live call, in whichever process runs it (after saying `goodbye`, if given)."""
        if self._redis is None:
            await self._registry.end_call(session_id, reason, goodbye)
        else:
            order = {"session_id": session_id, "reason": reason, "goodbye": goodbye}
            await self._redis.publish(self._channel, json.dumps(order))

    async def _listen(self, pubsub) -> None:
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    order = json.loads(message["data"])
                    if "session_id" in order:
                        await self._registry.end_call(
                            order["session_id"], order["reason"], order.get("goodbye")
                        )
                    else:
                        await self._registry.end_agent_calls(order["agent_id"], order["reason"])
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning(f"ignoring malformed call-control message: {exc}")
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
