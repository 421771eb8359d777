"""The analytics API from real calls: calls and end reasons, voice-to-voice percentiles and
cost per bucket, the agent filter, refusals of bad windows, and accounts that never see each
other's calls."""

import asyncio
import statistics
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.helpers.calls import spoken_call, wait_for_cost
from tests.helpers.post_call import talk
from tests.helpers.servers import account_client, scripted_agent


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


@pytest.fixture(scope="module")
async def calls(priced_server, scripted_llm):
    """Two accounts' real calls: alpha's spoken call and typed call (two agents), beta's typed call."""
    scripted_llm.reset()
    alpha, beta = account_client(priced_server, "alpha"), account_client(priced_server, "beta")
    started = datetime.now(UTC)
    spoken_agent = scripted_agent(alpha, name="Front desk", greeting="Hello there.")
    typed_agent = scripted_agent(alpha, name="Bookings")
    beta_agent = scripted_agent(beta, name="Beta desk")
    alpha_key = alpha.headers["X-API-Key"]
    spoken = await spoken_call(
        priced_server, spoken_agent, "How is the weather today?", "Thanks, goodbye.", key=alpha_key
    )
    typed = await talk(priced_server, typed_agent, "When do you open?", key=alpha_key)
    beta_call = await talk(priced_server, beta_agent, "Hi?", key=beta.headers["X-API-Key"])
    sessions = {
        name: wait_for_cost(client, session_id)
        for name, client, session_id in (
            ("spoken", alpha, spoken),
            ("typed", alpha, typed),
            ("beta", beta, beta_call),
        )
    }
    yield {
        "alpha": alpha,
        "beta": beta,
        "agents": {"spoken": spoken_agent, "typed": typed_agent, "beta": beta_agent},
        "sessions": sessions,
        "window": {"from": (started - timedelta(minutes=1)).isoformat(), "bucket": "hour"},
    }
    alpha.close()
    beta.close()


def test_calls_per_bucket_and_end_reasons(calls):
    alpha = calls["alpha"]
    result = alpha.get("/v1/analytics/calls", params=calls["window"])
    assert result.status_code == 200, result.text
    body = result.json()
    assert (body["calls"], body["failed"], body["end_reasons"]) == (2, 0, {"caller_hangup": 2})
    assert body["bucket"] == "hour" and body["agent_id"] is None
    starts = [datetime.fromisoformat(b["start"]) for b in body["buckets"]]
    assert all(
        later - earlier == timedelta(hours=1)
        for earlier, later in zip(starts, starts[1:], strict=False)
    )
    assert (
        starts[0]
        <= datetime.fromisoformat(calls["window"]["from"])
        < starts[0] + timedelta(hours=1)
    )
    assert sum(b["calls"] for b in body["buckets"]) == 2

    typed_only = alpha.get(
        "/v1/analytics/calls",
        params={**calls["window"], "agent_id": calls["agents"]["typed"]["id"]},
    ).json()
    assert typed_only["calls"] == 1 and typed_only["agent_id"] == calls["agents"]["typed"]["id"]
    by_day = alpha.get("/v1/analytics/calls", params={**calls["window"], "bucket": "day"}).json()
    assert by_day["calls"] == 2 and len(by_day["buckets"]) in (1, 2)


def test_voice_to_voice_percentiles(calls):
    turns = [t["voice_to_voice_secs"] for t in calls["sessions"]["spoken"]["latency"]["turns"]]
    # Two questions; on a busy machine a pause inside one can make it two measured turns.
    assert len(turns) >= 2 and all(0 < secs < 10 for secs in turns)
    body = calls["alpha"].get("/v1/analytics/latency", params=calls["window"]).json()
    assert body["turns"] == len(turns)  # the typed call has no spoken turns
    assert (body["p50_secs"], body["p95_secs"]) == (percentile(turns, 50), percentile(turns, 95))
    measured = [b for b in body["buckets"] if b["turns"]]
    assert sum(b["turns"] for b in measured) == len(turns)
    assert all(b["p50_secs"] is None for b in body["buckets"] if not b["turns"])


def test_cost_by_agent_and_stage(calls):
    sessions, agents = calls["sessions"], calls["agents"]
    body = calls["alpha"].get("/v1/analytics/cost", params=calls["window"]).json()
    spoken, typed = sessions["spoken"]["cost"], sessions["typed"]["cost"]
    assert spoken["total"] > 0 and typed["total"] > 0, (spoken, typed)
    assert body["currency"] == "USD"
    assert body["total"] == pytest.approx(spoken["total"] + typed["total"], abs=1e-6)
    assert body["by_agent"] == {
        agents["spoken"]["id"]: pytest.approx(spoken["total"], abs=1e-6),
        agents["typed"]["id"]: pytest.approx(typed["total"], abs=1e-6),
    }
    assert body["agent_names"] == {
        agents["spoken"]["id"]: "Front desk",
        agents["typed"]["id"]: "Bookings",
    }
    llm = sum(
        line["amount"]
        for cost in (spoken, typed)
        for line in cost["breakdown"]
        if line["stage"] == "llm"
    )
    assert body["by_stage"]["llm"] == pytest.approx(llm, abs=1e-6) and llm > 0
    assert sum(b["total"] for b in body["buckets"]) == pytest.approx(body["total"], abs=1e-6)


def test_accounts_never_see_each_others_calls(calls):
    alpha, beta, agents = calls["alpha"], calls["beta"], calls["agents"]
    beta_view = {
        kind: beta.get(f"/v1/analytics/{kind}", params=calls["window"]).json()
        for kind in ("calls", "latency", "cost")
    }
    assert beta_view["calls"]["calls"] == 1 and beta_view["latency"]["turns"] == 0
    assert set(beta_view["cost"]["by_agent"]) == {agents["beta"]["id"]}
    assert beta_view["cost"]["total"] == pytest.approx(
        calls["sessions"]["beta"]["cost"]["total"], abs=1e-6
    )
    for kind in ("calls", "latency", "cost"):
        refused = beta.get(
            f"/v1/analytics/{kind}", params={**calls["window"], "agent_id": agents["spoken"]["id"]}
        )
        assert refused.status_code == 404 and refused.json()["code"] == "agent_not_found"
        assert "Front desk" not in refused.text
    assert (
        alpha.get("/v1/analytics/calls", params={"agent_id": agents["beta"]["id"]}).status_code
        == 404
    )


async def test_a_parallel_burst_of_queries_from_two_accounts_stays_apart(calls, priced_server):
    """Both accounts fire good and bad queries at once: each good one answers what it answers
    alone, each bad one a 4xx with the error shape, and no answer shows the other account's data."""
    alpha, beta, agents = calls["alpha"], calls["beta"], calls["agents"]
    window = {**calls["window"], "to": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    alone = {
        (who, kind): client.get(f"/v1/analytics/{kind}", params=window).json()
        for who, client in (("alpha", alpha), ("beta", beta))
        for kind in ("calls", "latency", "cost")
    }
    bad = (
        ({"bucket": "minute"}, 422),
        ({"from": "2026-13-45"}, 422),
        ({"from": "9" * 400}, 422),
        ({"to": "2000-01-01T00:00:00", "from": "2001-01-01T00:00:00"}, 422),
        ({"from": "1900-01-01T00:00:00", "bucket": "hour"}, 422),
        ({"agent_id": "agt_' OR 1=1 --"}, 404),
    )
    async with httpx.AsyncClient(base_url=priced_server.url, timeout=60) as client:

        async def ask(who: str, kind: str, params: dict, status: int):
            key = calls[who].headers["X-API-Key"]
            response = await client.get(
                f"/v1/analytics/{kind}", params=params, headers={"X-API-Key": key}
            )
            return who, kind, params, status, response

        asks = [
            (who, kind, {**window, **params}, status)
            for who in ("alpha", "beta")
            for kind in ("calls", "latency", "cost")
            for params, status in (({}, 200), *bad)
        ]
        asks += [
            ("beta", kind, {**window, "agent_id": agents["spoken"]["id"]}, 404)
            for kind in ("calls", "latency", "cost")
        ]
        answers = await asyncio.gather(*(ask(*one) for one in asks * 3))
    for who, kind, params, status, response in answers:
        assert response.status_code == status, (who, params, response.text)
        if status == 200:
            assert response.json() == alone[(who, kind)]
        else:
            assert response.json()["code"] and response.json()["message"]
            assert "Front desk" not in response.text and "Bookings" not in response.text


def test_bad_windows_are_refused(priced_server):
    now = datetime.now(UTC)
    with priced_server.client() as api:
        for params, code in (
            ({"bucket": "week"}, "validation_error"),
            ({"from": "yesterday"}, "validation_error"),
            ({"from": "1700000000"}, "validation_error"),  # a number is not read as Unix time
            ({"to": "0.5"}, "validation_error"),
            (
                {"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()},
                "invalid_window",
            ),
            (
                {"from": (now - timedelta(days=60)).isoformat(), "bucket": "hour"},
                "window_too_large",
            ),
            ({"agent_id": "x" * 41}, "validation_error"),
        ):
            for kind in ("calls", "latency", "cost"):
                response = api.get(f"/v1/analytics/{kind}", params=params)
                assert response.status_code == 422, (params, response.text)
                assert response.json()["code"] == code and response.json()["message"]
        number = api.get("/v1/analytics/calls", params={"to": "1e9"}).json()["message"]
        assert "ISO 8601" in number, number
        day = api.get("/v1/analytics/calls", params={"from": "2026-01-01", "to": "2026-01-03"})
        assert day.status_code == 200 and len(day.json()["buckets"]) == 2
    assert httpx.get(f"{priced_server.url}/v1/analytics/calls").status_code == 401


def test_analytics_are_documented(priced_server):
    spec = httpx.get(f"{priced_server.url}/openapi.json").json()
    for kind, model in (
        ("calls", "CallsAnalytics"),
        ("latency", "LatencyAnalytics"),
        ("cost", "CostAnalytics"),
    ):
        route = spec["paths"][f"/v1/analytics/{kind}"]["get"]
        assert {p["name"] for p in route["parameters"]} == {"from", "to", "agent_id", "bucket"}
        schema = route["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}
        assert route["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ErrorBody"
        )
    assert "buckets" in spec["components"]["schemas"]["CostAnalytics"]["properties"]
