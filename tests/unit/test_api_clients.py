"""Provider API clients shared by the calls of a process (pipelines/api_clients.py)."""

import asyncio

import pytest

from pipelines import api_clients
from pipelines.api_clients import SharedClientOpenAILLMService, shared_client

pytestmark = pytest.mark.storage_free


def llm(base_url: str = "http://127.0.0.1:9/v1", api_key: str = "k1"):
    return SharedClientOpenAILLMService(
        base_url=base_url, api_key=api_key, settings=SharedClientOpenAILLMService.Settings()
    )


async def test_calls_on_one_loop_share_a_client_per_endpoint_and_key():
    first, second = llm(), llm()
    assert first._client is second._client
    assert llm(api_key="k2")._client is not first._client  # a tenant's own key, its own client
    assert llm(base_url="http://127.0.0.1:10/v1")._client is not first._client
    assert str(first._client.base_url) == "http://127.0.0.1:9/v1/"
    assert llm(api_key="k2")._client.api_key == "k2"


def test_each_event_loop_has_its_own_and_none_is_shared_outside_one():
    async def client():
        return llm()._client

    assert asyncio.run(client()) is not asyncio.run(client())
    assert llm()._client is not llm()._client


async def test_the_least_recently_used_is_let_go_past_the_limit():
    made = []
    first = shared_client(("lru", 0), lambda: made.append(0) or object())
    for i in range(1, api_clients.MAX_CLIENTS_PER_LOOP + 1):
        shared_client(("lru", i), object)
    assert shared_client(("lru", api_clients.MAX_CLIENTS_PER_LOOP), object) is not None
    assert shared_client(("lru", 0), object) is not first  # it was let go, made anew
    assert made == [0]
