"""Sessions over real HTTP: creation, lifecycle fields, listing, transcripts, refusals."""

from datetime import datetime, timedelta

import pytest

from tests.helpers.servers import make_agent


def test_create_session_returns_a_joinable_url(api, server):
    agent = make_agent(api)
    response = api.post(
        f"/v1/agents/{agent['id']}/sessions",
        json={"metadata": {"crm_id": 42}, "initial_message": "Welcome!"},
    )
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["session_id"].startswith("ses_")
    assert session["agent_id"] == agent["id"]
    assert session["status"] == "created"
    assert session["metadata"] == {"crm_id": 42}
    assert session["initial_message"] == "Welcome!"
    assert session["websocket_url"].startswith(
        server.ws_url(f"/v1/sessions/{session['session_id']}/ws?token=")
    )
    created = datetime.fromisoformat(session["created_at"])
    expires = datetime.fromisoformat(session["expires_at"])
    assert timedelta(minutes=14) < expires - created <= timedelta(minutes=15)
    assert api.get(f"/v1/sessions/{session['session_id']}").json() == session


def test_session_body_is_optional(api):
    agent = make_agent(api)
    assert api.post(f"/v1/agents/{agent['id']}/sessions").status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"metadata": "nope"},
        {"initial_message": 5},
        {"surprise": True},
        {"initial_message": "x" * 2001},
    ],
)
def test_invalid_session_body_is_422(api, body):
    agent = make_agent(api)
    response = api.post(f"/v1/agents/{agent['id']}/sessions", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_paused_agent_cannot_start_a_session(api):
    agent = make_agent(api)
    api.patch(f"/v1/agents/{agent['id']}", json={"status": "paused"})
    response = api.post(f"/v1/agents/{agent['id']}/sessions")
    assert response.status_code == 409
    assert response.json() == {
        "code": "agent_paused",
        "message": f"agent '{agent['id']}' is paused and cannot start a session",
        "details": None,
    }


def test_cloud_pipeline_without_keys_names_the_missing_variables(api):
    agent = make_agent(api, pipeline="cloud", voice_id="katie")
    response = api.post(f"/v1/agents/{agent['id']}/sessions")
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "missing_credentials"
    for variable in ("DEEPGRAM_API_KEY", "ANTHROPIC_API_KEY", "CARTESIA_API_KEY"):
        assert variable in error["message"]


def test_list_filters_by_agent_and_status(api):
    first, second = make_agent(api), make_agent(api)
    ids = [api.post(f"/v1/agents/{first['id']}/sessions").json()["session_id"] for _ in range(3)]
    api.post(f"/v1/agents/{second['id']}/sessions")
    page = api.get("/v1/sessions", params={"agent_id": first["id"], "limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert {s["session_id"] for s in page["items"]} <= set(ids)
    rest = api.get("/v1/sessions", params={"agent_id": first["id"], "limit": 2, "offset": 2}).json()
    assert len(rest["items"]) == 1
    created = api.get("/v1/sessions", params={"agent_id": first["id"], "status": "created"}).json()
    assert created["total"] == 3
    assert (
        api.get("/v1/sessions", params={"agent_id": first["id"], "status": "completed"}).json()[
            "total"
        ]
        == 0
    )
    assert api.get("/v1/sessions", params={"status": "bogus"}).status_code == 422


def test_missing_session_is_404(api):
    for path in ("/v1/sessions/ses_missing", "/v1/sessions/ses_missing/transcript"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "session_not_found"


def test_new_session_has_an_empty_transcript(api):
    agent = make_agent(api)
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    assert api.get(f"/v1/sessions/{session['session_id']}/transcript").json() == {
        "session_id": session["session_id"],
        "items": [],
    }


def test_deleting_an_agent_fails_its_unjoined_sessions(api):
    agent = make_agent(api)
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    api.delete(f"/v1/agents/{agent['id']}")
    after = api.get(f"/v1/sessions/{session['session_id']}").json()
    assert (after["status"], after["end_reason"], after["websocket_url"]) == (
        "failed",
        "agent_deleted",
        None,
    )
