"""The agents API over real HTTP, including every validation error."""

import re

import httpx
import pytest

from tests.helpers.servers import make_agent


def test_every_v1_route_needs_the_api_key(server):
    routes = [
        ("POST", "/v1/agents"),
        ("POST", "/v1/agents/create"),
        ("GET", "/v1/agents"),
        ("GET", "/v1/agents/agt_x"),
        ("PATCH", "/v1/agents/agt_x"),
        ("DELETE", "/v1/agents/agt_x"),
        ("POST", "/v1/agents/agt_x/sessions"),
        ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/ses_x"),
        ("GET", "/v1/sessions/ses_x/transcript"),
        ("GET", "/v1/pipelines"),
    ]
    for method, path in routes:
        for headers in ({}, {"X-API-Key": "sk_wrong"}):
            response = httpx.request(method, server.url + path, headers=headers, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["code"] == "unauthorized"


def test_create_returns_the_agent_with_defaults(api):
    agent = make_agent(api, greeting="Hi there")
    assert agent["id"].startswith("agt_")
    assert agent["status"] == "active"
    assert agent["language"] == "en"
    assert agent["max_turns"] == 50
    assert agent["pipeline"] == "local"
    assert agent["tools"] == []
    assert agent["greeting"] == "Hi there"
    assert agent["created_at"].endswith("Z") or "+00:00" in agent["created_at"]
    assert api.get(f"/v1/agents/{agent['id']}").json() == agent


def test_create_alias_and_tools(api):
    tool = {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
    response = api.post(
        "/v1/agents/create",
        json={
            "name": "Orders",
            "voice_id": "joe",
            "system_prompt": "Help with orders.",
            "tools": [tool],
            "max_turns": 3,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["tools"] == [tool]
    assert response.json()["max_turns"] == 3


@pytest.mark.parametrize(
    "body, field",
    [
        ({"voice_id": "joe", "system_prompt": "x"}, "name"),
        ({"name": "a", "system_prompt": "x"}, "voice_id"),
        ({"name": "a", "voice_id": "joe"}, "system_prompt"),
        ({"name": "a", "voice_id": "joe", "system_prompt": "x", "max_turns": 0}, "max_turns"),
        ({"name": "a", "voice_id": "joe", "system_prompt": "x", "max_turns": 501}, "max_turns"),
        ({"name": "", "voice_id": "joe", "system_prompt": "x"}, "name"),
        (
            {
                "name": "a",
                "voice_id": "joe",
                "system_prompt": "x",
                "tools": [{"name": "bad name!", "description": "d"}],
            },
            "tools",
        ),
        (
            {
                "name": "a",
                "voice_id": "joe",
                "system_prompt": "x",
                "tools": [{"name": "t", "description": "d", "parameters": {"type": "string"}}],
            },
            "tools",
        ),
        (
            {
                "name": "a",
                "voice_id": "joe",
                "system_prompt": "x",
                "tools": [{"name": "t", "description": "d"}, {"name": "t", "description": "e"}],
            },
            "tools",
        ),
        ({"name": "a", "voice_id": "joe", "system_prompt": "x", "unexpected": 1}, "unexpected"),
        (
            {"name": "a", "voice_id": "joe", "system_prompt": "x", "overflow_number": "911"},
            "overflow_number",
        ),
        (  # premium rate
            {
                "name": "a",
                "voice_id": "joe",
                "system_prompt": "x",
                "overflow_number": "+19005550100",
            },
            "overflow_number",
        ),
        (
            {"name": "a", "voice_id": "joe", "system_prompt": "x", "overflow": "hold"},
            "overflow",
        ),
        (
            {"name": "a", "voice_id": "joe", "system_prompt": "x", "max_wait_secs": 2},
            "max_wait_secs",
        ),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(api, body, field):
    response = api.post("/v1/agents", json=body)
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "validation_error"
    assert field in error["message"]


def test_unknown_voice_lists_the_valid_voices_case_sensitively(api):
    response = api.post("/v1/agents", json={"name": "a", "voice_id": "Joe", "system_prompt": "x"})
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "unknown_voice"
    assert error["details"]["voices"] == ["joe"]
    assert "joe" in error["message"]


def test_unknown_pipeline_lists_the_known_ones(api):
    response = api.post(
        "/v1/agents",
        json={"name": "a", "voice_id": "joe", "system_prompt": "x", "pipeline": "nope"},
    )
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "unknown_pipeline"
    assert {"local", "cloud"} <= set(error["details"]["pipelines"])


def test_malformed_json_is_a_clear_422(api):
    response = api.post(
        "/v1/agents", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def _json_bodies(spec: dict, ids: dict[str, str] | None = None):
    """(method, template, URL, body schema) of each JSON request body; the URL's ids are those
    `ids` gives, else a placeholder."""
    for template, operations in spec["paths"].items():
        url = re.sub(r"\{([^}]+)\}", lambda m: (ids or {}).get(m[1], "x_1"), template)
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                yield method, template, url, body["schema"]


# A value of another JSON type that pydantic's lax mode would have taken for each type
_WRONG_TYPE = {"integer": [True, "5"], "number": [True, "1.5"], "boolean": [1, "true"]}


def _typed_leaves(schema: dict, defs: dict, path: tuple = ()):
    """(path, schema) of each integer, number and boolean a body schema holds, nested objects and
    arrays' items included (an array's item at index 0)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    for option in schema.get("anyOf", []):  # a range may sit beside the anyOf (PATCH bodies)
        bounds = {k: v for k, v in schema.items() if k in ("minimum", "maximum")}
        yield from _typed_leaves({**option, **bounds}, defs, path)
    if schema.get("type") in _WRONG_TYPE:
        yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _typed_leaves(sub, defs, (*path, name))
    if isinstance(schema.get("items"), dict) and path:
        yield from _typed_leaves(schema["items"], defs, (*path, 0))


def _keywords(node):
    """Every key of every schema object in `node` (property names aside)."""
    if isinstance(node, list):
        for item in node:
            yield from _keywords(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key != "properties":
                yield key
            yield from _keywords(list(value.values()) if key == "properties" else value)


def _nest(path: tuple, value):
    for key in reversed(path):
        value = [value] if key == 0 else {key: value}
    return value


def test_every_json_body_takes_each_value_only_as_its_documented_type(api):
    """Each integer, number and boolean of every JSON request body in /openapi.json refuses a
    value of another type with a 422 naming it: `true` is not 1, `"5"` is not 5, 1 is not true.
    An integer takes a whole number written with a fraction (5.0), as JSON Schema does."""
    spec = api.get("/openapi.json").json()
    defs = spec["components"]["schemas"]
    checked = set()
    for method, template, url, schema in _json_bodies(spec):
        for path, leaf in _typed_leaves(schema, defs):
            for wrong in _WRONG_TYPE[leaf["type"]]:
                where = (method, template, path, wrong)
                response = api.request(method, url, json=_nest(path, wrong))
                assert response.status_code == 422, where
                body = response.json()
                assert body["code"] == "validation_error", where
                named = [tuple(e["loc"][-len(path) :]) for e in body["details"]]
                assert path in named, (where, body["details"])
            if leaf["type"] == "integer":
                whole = float(leaf.get("minimum", 1))
                body = api.request(method, url, json=_nest(path, whole)).json()
                named = [tuple(e["loc"][-len(path) :]) for e in body.get("details") or []]
                assert path not in named, (method, template, path, whole, body)
            checked.add((template, path[-1]))
    assert not set(_keywords(spec)) & {"ge", "gt", "le", "lt"}, "a range the schema lost"
    for field in [  # a sample, so the test cannot pass by finding no fields
        ("/v1/accounts", "recording_quota_bytes"),
        ("/v1/agents", "interruptible"),
        ("/v1/agents", "timeout_secs"),  # a tool's, in a list
        ("/v1/agents", "detect"),  # voicemail's, in an object
        ("/v1/calls/inline", "temperature"),
        ("/v1/campaigns", "calls_per_minute"),
        ("/v1/agents/{agent_id}/webrtc/offer", "sdp_mline_index"),
    ]:
        assert field in checked, field


def test_every_json_body_takes_null_exactly_where_its_schema_does(api):
    """A top-level field whose schema allows null is not refused for being null (PATCH /v1/accounts
    refused `name: null`, which its schema allowed); one whose schema does not is a 422 naming it."""
    spec = api.get("/openapi.json").json()
    defs = spec["components"]["schemas"]
    ids = {  # real ones, so a refusal is not a 404 before the body is looked at
        "agent_id": make_agent(api)["id"],
        "account_id": api.post("/v1/accounts", json={"name": "Nulls"}).json()["id"],
    }
    nullable = set()
    for method, template, url, schema in _json_bodies(spec, ids):
        if "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[1]]
        for name, field in schema.get("properties", {}).items():
            takes_null = any(o.get("type") == "null" for o in [field, *field.get("anyOf", [])])
            body = api.request(method, url, json={name: None}).json()
            details = body.get("details")
            named = [e["loc"][-1] for e in details if e.get("loc")] if type(details) is list else []
            refused = name in named or f"{name}: " in body.get("message", "")
            assert refused != takes_null, (method, template, name, takes_null, body)
            if takes_null:
                nullable.add((template, name))
    assert ("/v1/agents/{agent_id}", "greeting") in nullable  # so the test cannot pass vacuously
    assert ("/v1/agents/{agent_id}", "name") not in nullable


def test_a_method_a_resource_does_not_take_is_405_naming_every_method_it_does(api):
    """`Allow` lists the methods the OpenAPI document gives the path (a resource's GET and PATCH
    are separate routes; Starlette named only the first's)."""
    agent = make_agent(api)
    documented = api.get("/openapi.json").json()["paths"]
    for path, url in [
        ("/v1/agents/{agent_id}", f"/v1/agents/{agent['id']}"),
        ("/v1/accounts/{account_id}", "/v1/accounts/acc_default"),
        ("/v1/agents", "/v1/agents"),
        ("/v1/agents/create", "/v1/agents/create"),  # a literal path before {agent_id}
    ]:
        response = api.request("PUT", url)
        assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
        allowed = set(response.headers["allow"].split(", "))
        assert allowed == {m.upper() for m in documented[path]}, (path, allowed)


def test_list_paginates_and_counts(api):
    ids = [make_agent(api, name=f"Paged {i}")["id"] for i in range(3)]
    page = api.get("/v1/agents", params={"limit": 2, "offset": 0}).json()
    assert page["limit"] == 2 and len(page["items"]) == 2
    assert page["total"] >= 3
    everything = []
    offset = 0
    while offset < page["total"]:
        chunk = api.get("/v1/agents", params={"limit": 100, "offset": offset}).json()
        everything += [a["id"] for a in chunk["items"]]
        offset += 100
    assert set(ids) <= set(everything)
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        assert api.get("/v1/agents", params=bad).status_code == 422


def test_patch_updates_fields_and_status(api):
    agent = make_agent(api)
    response = api.patch(
        f"/v1/agents/{agent['id']}", json={"name": "Renamed", "status": "paused", "max_turns": 7}
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["name"], updated["status"], updated["max_turns"]) == ("Renamed", "paused", 7)
    assert api.get(f"/v1/agents/{agent['id']}").json()["status"] == "paused"
    assert (
        api.patch(f"/v1/agents/{agent['id']}", json={"status": "active"}).json()["status"]
        == "active"
    )


@pytest.mark.parametrize(
    "body, code",
    [
        ({"status": "deleted"}, "validation_error"),
        ({"voice_id": "nobody"}, "unknown_voice"),
        ({"pipeline": "nope"}, "unknown_pipeline"),
        ({"max_turns": 1000}, "validation_error"),
        ({"name": None}, "validation_error"),
    ],
)
def test_patch_validation(api, body, code):
    agent = make_agent(api)
    response = api.patch(f"/v1/agents/{agent['id']}", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == code


def test_missing_agent_is_404_on_every_route(api):
    for method, path in [
        ("GET", "/v1/agents/agt_missing"),
        ("PATCH", "/v1/agents/agt_missing"),
        ("DELETE", "/v1/agents/agt_missing"),
        ("POST", "/v1/agents/agt_missing/sessions"),
    ]:
        response = api.request(method, path, json={})
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "agent_not_found"


def test_delete_marks_deleted_and_blocks_changes_and_sessions(api):
    agent = make_agent(api)
    response = api.delete(f"/v1/agents/{agent['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "deleted"
    assert api.get(f"/v1/agents/{agent['id']}").json()["status"] == "deleted"
    assert agent["id"] not in [
        a["id"] for a in api.get("/v1/agents", params={"limit": 100}).json()["items"]
    ]
    assert agent["id"] in [
        a["id"]
        for a in api.get("/v1/agents", params={"status": "deleted", "limit": 100}).json()["items"]
    ]
    assert api.patch(f"/v1/agents/{agent['id']}", json={"name": "x"}).status_code == 409
    response = api.post(f"/v1/agents/{agent['id']}/sessions")
    assert response.status_code == 409
    assert response.json()["code"] == "agent_deleted"


def test_pipelines_lists_voices(api):
    pipelines = {p["name"]: p for p in api.get("/v1/pipelines").json()}
    assert pipelines["local"]["voices"] == ["joe"]
    assert pipelines["local"]["missing_env"] == []
    assert "cloud" in pipelines


def test_openapi_describes_the_error_shape(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    create = spec["paths"]["/v1/agents"]["post"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])
