"""Errors nobody handled: logged with their traceback, route and session, and answered with the
error shape (HTTP 500 `internal_error`) or a 1011 close (WebSockets), never a bare text body.

A genuine fault forces them: tables the server needs are dropped under it, as a botched manual
migration would.
"""

import asyncio
import time
from urllib.parse import parse_qs, urlsplit

from app.client import SessionClient
from tests.helpers.servers import make_agent, start_server
from tests.helpers.storage import TEST_BACKEND, query_database


def drop_table(server, table: str) -> None:
    query_database(
        server, f"DROP TABLE {table}" + (" CASCADE" if TEST_BACKEND == "postgres" else "")
    )


def wait_for_log(server, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while text not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.log()


async def test_an_internal_error_is_logged_and_answered_in_the_error_shape(tmp_path):
    server = start_server(tmp_path / "broken")
    try:
        with server.client() as api:
            agent = make_agent(api, pipeline="scripted")
            session = api.post(f"/v1/agents/{agent['id']}/sessions", json={}).json()
            session_id = session["session_id"]

            await asyncio.to_thread(drop_table, server, "session_latency")
            response = api.get(f"/v1/sessions/{session_id}")
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["code"] == "internal_error" and body["message"] and body["details"] is None
            event = f"unhandled error in GET /v1/sessions/{{session_id}} (path /v1/sessions/{session_id}, session {session_id})"
            log = wait_for_log(server, event)
            # The event carries the traceback, which names the missing table.
            traceback = log[log.index(event) + len(event) :].split("\n\n")[0]
            assert traceback.lstrip().startswith("Traceback") and "session_latency" in traceback

            # The next request still works: one broken route doesn't take the server down.
            assert api.get(f"/v1/agents/{agent['id']}").status_code == 200

            await asyncio.to_thread(drop_table, server, "agents")
            async with SessionClient(session["websocket_url"]) as client:
                deadline = time.monotonic() + 10
                while not client.closed and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            assert client.close_code == 1011 and client.close_reason
            log = wait_for_log(server, "unhandled error in WEBSOCKET")
            assert (
                f"unhandled error in WEBSOCKET /v1/sessions/{{session_id}}/ws (path /v1/sessions/{session_id}/ws, session {session_id})"
                in log
            )
            # Tracebacks carry no local variables' values (loguru marks them `└ value`): neither key nor token.
            token = parse_qs(urlsplit(session["websocket_url"]).query)["token"][0]
            assert server.api_key not in log and token not in log and "└ " not in log
    finally:
        server.stop()
