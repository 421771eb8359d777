"""Provider API clients shared by the calls of a process.

Pipecat's LLM services build an API client per service, so per call: ~30 ms of CPU (mostly
its TLS context), spent on the event loop every other call's audio runs on, and a connection
pool that dies with the call. Here calls on the same event loop, provider endpoint and key
share one client, so a call starts without that cost and reuses warm connections.
"""

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from pipecat.services.openai.llm import OpenAILLMService

Client = TypeVar("Client")

MAX_CLIENTS_PER_LOOP = 32
"""Endpoint-and-key pairs kept per event loop (tenants may bring their own keys); the least
recently used is let go, and closes once the calls using it are gone."""

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[Hashable, Any]]" = (
    weakref.WeakKeyDictionary()
)


def shared_client(key: Hashable, make: Callable[[], Client]) -> Client:
    """The client for `key` on the running event loop, made with `make` the first time; a
    new one each time outside an event loop (an httpx client belongs to one loop)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return make()
    clients = _clients.setdefault(loop, OrderedDict())
    if key in clients:
        clients.move_to_end(key)
    else:
        clients[key] = make()
        if len(clients) > MAX_CLIENTS_PER_LOOP:
            clients.popitem(last=False)
    return clients[key]


class SharedClientOpenAILLMService(OpenAILLMService):
    """`OpenAILLMService` on a shared `AsyncOpenAI` client (`create_client` is Pipecat's hook
    for the client a service uses)."""

    def create_client(
        self,
        api_key=None,
        base_url=None,
        organization=None,
        project=None,
        default_headers=None,
        **kwargs,
    ):
        key = (
            "openai",
            api_key,
            base_url,
            organization,
            project,
            tuple(sorted((default_headers or {}).items())),
        )
        make = super().create_client
        return shared_client(
            key,
            lambda: make(
                api_key=api_key,
                base_url=base_url,
                organization=organization,
                project=project,
                default_headers=default_headers,
                **kwargs,
            ),
        )
