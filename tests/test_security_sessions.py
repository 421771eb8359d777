"""Attacks on sessions, tokens, carrier webhooks, logs and the dashboard log-in, and the refusals.

Each test attacks one weakness over real transports (a real `switchboard serve`, real HTTP and
WebSockets), often as a parallel burst, and checks the server refuses cleanly: a 4xx with the
JSON error shape, or a WebSocket close with a 44xx code and a reason, never a traceback.
"""

import asyncio
import base64
import json
import random
import string
import time
from urllib.parse import parse_qs, quote, urlparse
from xml.etree import ElementTree

import httpx
import pytest
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.calls.tokens import MAX_TOKEN_CHARS, TokenError, TokenSigner
from app.client import SessionClient
from app.deps import LOGIN_COOKIE
from app.main import create_app
from app.settings import Settings
from tests.fakes.carrier_webhooks import TelnyxSigner, plivo_post, plivo_v3_signature
from tests.fakes.twilio_client import TwilioMediaStreamsClient
from tests.helpers.calls import wait_for_status
from tests.helpers.servers import ADMIN_KEY, TEST_PIPELINES, scripted_agent, start_server
from tests.helpers.storage import TEST_BACKEND, production_storage_env

SECRET = "security-test-current-secret-5f1e"
TWILIO_TOKEN = "security_test_twilio_token"
PLIVO_TOKEN = "security_test_plivo_token"
TELNYX = TelnyxSigner()
LOGIN_FAILURES = 5
CALLER, NUMBER = "+15550007001", "+15550007002"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory, scripted_llm):
    """Every carrier's signing credential configured, a known token secret, few allowed failed log-ins."""
    server = start_server(
        tmp_path_factory.mktemp("secure"),
        preload=["scripted"],
        env={
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "SWITCHBOARD_SECRET_KEY": SECRET,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TELNYX_PUBLIC_KEY": TELNYX.public_key,
            "PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "SWITCHBOARD_DASHBOARD_LOGIN_FAILURES_PER_MINUTE": str(LOGIN_FAILURES),
        },
    )
    yield server
    server.stop()


@pytest.fixture
def api(secure_server):
    with secure_server.client() as client:
        yield client


def assert_clean_log(server) -> None:
    """Nothing crashed: every unhandled or logged exception writes a traceback (loguru's
    `logger.exception`, tests/test_internal_errors.py proves it), and uvicorn reports errors
    escaping the app as `Exception in ASGI application`."""
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-4000:]


async def closing(
    url: str, messages=(), subprotocols=None, timeout: float = 20
) -> tuple[int | None, str, list]:
    """Connect, send `messages`, and read until the server closes: (close code, reason, text received)."""
    received = []
    async with connect(url, subprotocols=subprotocols, max_size=None, open_timeout=timeout) as ws:
        try:
            for message in messages:
                await ws.send(message)
            async with asyncio.timeout(timeout):
                async for message in ws:
                    if isinstance(message, str):
                        received.append(message)
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason, received


def twilio_start(token: str | None) -> str:
    parameters = {} if token is None else {"token": token}
    return json.dumps(
        {
            "event": "start",
            "streamSid": "MZ1",
            "start": {
                "streamSid": "MZ1",
                "callSid": "CA1",
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


# --- Tokens (item 5, 11): unit ------------------------------------------------------------

MALFORMED_TOKENS = [
    "",
    ".",
    "abc",
    "abc.",
    ".abc",
    "a.b.c",
    "abc.dé",
    "aé.abc",
    "abc.d\u0000",
    "abc.abcde",  # 5 chars: bad base64
    "abc.ab==",
    "ab c.abc",
    "x" * (MAX_TOKEN_CHARS + 1),
    "a" * 3000 + "." + "b" * 3000,
    "🙂.🙂",
]


def test_token_signing_and_refusals():
    signer = TokenSigner("unit-secret")
    token = signer.issue("session", {"sid": "ses_1"}, time.time() + 60)
    assert signer.verify(token, "session")["sid"] == "ses_1"
    refusals = {
        "bad token signature": [
            TokenSigner("other").issue("session", {}, time.time() + 60),
            token[:-2] + "AA",
        ],
        "wrong token kind": [signer.issue("relay", {}, time.time() + 60)],
        "token expired": [signer.issue("session", {}, time.time() - 1)],
        "malformed token": MALFORMED_TOKENS,
    }
    for message, tokens in refusals.items():
        for bad in tokens:
            with pytest.raises(TokenError) as refused:
                signer.verify(bad, "session")
            assert str(refused.value) == message or message == "malformed token", (
                bad,
                refused.value,
            )
    # A signed payload that is not a JSON object is malformed too, not a crash.
    payload = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    forged_shape = f"{payload}.{signer.issue('x', {}, 0).split('.')[1]}"
    with pytest.raises(TokenError):
        signer.verify(forged_shape, "session")


def test_token_rotation_keeps_old_tokens_valid():
    old, new = TokenSigner("old-secret"), TokenSigner("new-secret", ["old-secret"])
    old_token = old.issue("session", {"sid": "s"}, time.time() + 60)
    new_token = new.issue("session", {"sid": "s"}, time.time() + 60)
    assert new.verify(old_token, "session")["sid"] == "s"
    assert (
        TokenSigner("new-secret").verify(new_token, "session")["sid"] == "s"
    )  # signed with the current key
    with pytest.raises(TokenError, match="bad token signature"):
        old.verify(new_token, "session")
    with pytest.raises(TokenError, match="bad token signature"):
        TokenSigner("new-secret").verify(old_token, "session")  # previous key dropped


# --- Malformed tokens over real WebSockets (item 5) -----------------------------------------


async def test_a_burst_of_malformed_tokens_closes_4401_with_a_reason(secure_server, api):
    agent = scripted_agent(api)
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    session_ws = secure_server.ws_url(f"/v1/sessions/{session['session_id']}/ws")
    attempts = []
    for bad in MALFORMED_TOKENS[1:]:
        attempts.append(closing(f"{session_ws}?token={quote(bad, safe='')}"))
        attempts.append(
            closing(secure_server.ws_url("/v1/sessions/twilio/stream"), [twilio_start(bad)])
        )
        attempts.append(
            closing(
                secure_server.ws_url(f"/v1/sessions/telnyx/stream?token={quote(bad, safe='')}"),
                [
                    json.dumps(
                        {"event": "start", "stream_id": "s1", "start": {"call_control_id": "c1"}}
                    )
                ],
            )
        )
    results = await asyncio.gather(*attempts)
    for code, reason, _ in results:
        assert code == 4401 and reason, (code, reason)
    # The session's WebSocket first says why in a session.error.
    code, reason, texts = await closing(f"{session_ws}?token={quote('abc.dé')}")
    assert (code, json.loads(texts[0])["code"]) == (4401, "invalid_token")
    # WebRTC's offer route: a malformed key or log-in cookie is a plain 401.
    offer = secure_server.url + f"/v1/agents/{agent['id']}/webrtc/offer"
    body = {"sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "type": "offer"}
    for headers in [
        {"X-API-Key": "k" * 5000},
        {"X-API-Key": "é".encode() * 10},
        {"Cookie": f"{LOGIN_COOKIE}=".encode() + "é".encode() * 10},
        {"Cookie": f"{LOGIN_COOKIE}={'x' * 4000}"},
    ]:
        response = httpx.post(offer, json=body, headers=headers, timeout=30)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    # Nothing was joined, nothing crashed, and the server still serves.
    assert api.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "created"
    assert httpx.get(secure_server.url + "/health", timeout=10).status_code == 200
    assert_clean_log(secure_server)


# --- Carrier webhook signatures (item 2) ----------------------------------------------------

WEBHOOKS = [
    "/v1/twilio/voice",
    "/v1/twilio/status",
    "/v1/sessions/twilio/task/call_x/connect",
    "/v1/sessions/twilio/task/call_x/status",
    "/v1/twilio/queue/wait_x/wait",
    "/v1/twilio/queue/wait_x/left",
    "/v1/twilio/queue/wait_x/connect",
    "/v1/telnyx/voice",
    "/v1/plivo/voice",
]


def test_carrier_webhooks_are_refused_when_no_signing_key_is_configured(tmp_path, scripted_llm):
    server = start_server(
        tmp_path / "unsigned",
        preload=[],
        env={"TWILIO_AUTH_TOKEN": "", "TELNYX_PUBLIC_KEY": "", "PLIVO_AUTH_TOKEN": ""},
    )
    try:
        with server.client() as api:
            agent = scripted_agent(api, phone_numbers=[NUMBER])
            form = {
                "CallSid": "CA" + "3" * 32,
                "CallUUID": "u1",
                "From": CALLER,
                "To": NUMBER,
                "CallStatus": "ringing",
            }
            with httpx.Client(timeout=30) as anonymous:
                answers = [anonymous.post(server.url + path, data=form) for path in WEBHOOKS * 3]
            for answer in answers:
                assert answer.status_code == 403, answer.text
                error = answer.json()
                assert error["code"] == "webhook_signing_not_configured"
                assert "SWITCHBOARD_INSECURE_UNSIGNED_CARRIER_WEBHOOKS" in error["message"]
                assert error["details"]["setting"] in (
                    "TWILIO_AUTH_TOKEN",
                    "TELNYX_PUBLIC_KEY",
                    "PLIVO_AUTH_TOKEN",
                )
            assert api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["total"] == 0
        assert (
            "refused Twilio webhook /v1/twilio/voice: TWILIO_AUTH_TOKEN is not set" in server.log()
        )
        assert_clean_log(server)
    finally:
        server.stop()


def test_the_insecure_development_setting_accepts_unsigned_webhooks_and_says_so(tmp_path):
    server = start_server(
        tmp_path / "insecure",
        preload=[],
        env={"TWILIO_AUTH_TOKEN": "", "SWITCHBOARD_INSECURE_UNSIGNED_CARRIER_WEBHOOKS": "true"},
    )
    try:
        with server.client() as api:
            agent = scripted_agent(api, phone_numbers=[NUMBER])
            answer = httpx.post(
                server.url + "/v1/twilio/voice",
                data={"CallSid": "CA1", "From": CALLER, "To": NUMBER},
            )
            assert answer.status_code == 200 and "<Stream" in answer.text
            assert api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["total"] == 1
        log = server.log()
        assert "INSECURE: SWITCHBOARD_INSECURE_UNSIGNED_CARRIER_WEBHOOKS is on" in log
        assert "accepting an unsigned Twilio webhook /v1/twilio/voice" in log
    finally:
        server.stop()


def stream_url(xml: str, carrier: str) -> str:
    root = ElementTree.fromstring(xml)
    stream = root.find("./Connect/Stream") if carrier == "telnyx" else root.find("Stream")
    return stream.get("url") if carrier == "telnyx" else stream.text


def test_telnyx_and_plivo_webhooks_need_their_signatures(secure_server, api):
    number = "+15550007003"
    agent = scripted_agent(api, phone_numbers=[number])
    form = {"CallSid": "v3:tx1", "CallUUID": "pl-1", "From": CALLER, "To": number}
    telnyx_url, plivo_url = (
        secure_server.url + "/v1/telnyx/voice",
        secure_server.url + "/v1/plivo/voice",
    )
    refused = [
        httpx.post(telnyx_url, data=form),  # unsigned
        TelnyxSigner().post(telnyx_url, form),  # another account's key
        TELNYX.post(telnyx_url, form, timestamp=int(time.time()) - 3600),  # replayed an hour later
        httpx.post(
            telnyx_url,
            content=b"To=%2B15550007003&From=%2B1999",  # body swapped under a signature
            headers={
                **TELNYX.headers(b"To=x"),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        ),
        httpx.post(plivo_url, data=form),  # unsigned
        plivo_post(plivo_url, form, "someone-elses-token"),
        httpx.post(
            plivo_url,
            data={**form, "To": "+1999"},
            headers={  # tampered form
                "X-Plivo-Signature-V3": plivo_v3_signature(plivo_url, form, "n1", PLIVO_TOKEN),
                "X-Plivo-Signature-V3-Nonce": "n1",
            },
        ),
    ]
    for response in refused:
        assert response.status_code == 403 and response.json()["code"] == "invalid_signature", (
            response.text
        )
    assert api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["total"] == 0

    telnyx = TELNYX.post(telnyx_url, form)
    plivo = plivo_post(f"{plivo_url}?agentId={agent['id']}", form, PLIVO_TOKEN)
    for carrier, answer in (("telnyx", telnyx), ("plivo", plivo)):
        assert answer.status_code == 200, answer.text
        url = stream_url(answer.text, carrier)
        assert (
            url.startswith(secure_server.ws_url(f"/v1/sessions/{carrier}/stream"))
            and parse_qs(urlparse(url).query)["token"]
        )
    sessions = api.get("/v1/sessions", params={"agent_id": agent["id"]}).json()["items"]
    assert sorted(s["connection_type"] for s in sessions) == ["plivo", "telnyx"]
    assert_clean_log(secure_server)


# --- Caller audio faster than real time (item 6) --------------------------------------------


def rss_kib(server) -> int:
    status = open(f"/proc/{server.process.pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


async def test_an_audio_flood_is_dropped_then_ended_and_other_calls_go_on(secure_server, api, llm):
    llm.script("Still here for you.", "Still here for you.")
    agent = scripted_agent(api)
    before = rss_kib(secure_server)
    key_url = secure_server.ws_url(f"/v1/agents/{agent['id']}/session")
    flood = SessionClient(key_url, headers={"X-API-Key": secure_server.api_key})
    chunk = b"\x01\x00" * 1600  # 100 ms at 16 kHz
    started = time.monotonic()
    async with flood:
        await flood.wait_for("session.ready", timeout=30)
        sent = 0
        try:
            while (
                sent < 20 * 60 * 10 and not flood.closed
            ):  # up to 20 minutes of audio, as fast as it goes
                await flood.send_raw(chunk)
                sent += 1
        except ConnectionClosed:
            pass
        deadline = time.monotonic() + 20
        while not flood.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert flood.closed
    assert [e["code"] for e in flood.of_type("session.error")] == ["audio_too_fast"]
    assert time.monotonic() - started < 30
    ended = wait_for_status(api, flood.of_type("session.ready")[0]["session_id"], "failed")
    assert "faster than real time" in ended["error"]
    assert rss_kib(secure_server) - before < 150_000

    # A carrier stream flooding media is ended too.
    twiml = api.post(
        "/v1/sessions/twilio",
        json={"agentId": agent["id"], "from": CALLER, "to": NUMBER},
        headers={"Accept": "application/json"},
    ).json()
    carrier = TwilioMediaStreamsClient.from_twiml(twiml["twiml"])
    async with carrier:
        payload = base64.b64encode(b"\xff" * 160).decode()
        try:
            for _ in range(20 * 60 * 50):
                await carrier._send(
                    {
                        "event": "media",
                        "streamSid": carrier.stream_sid,
                        "media": {"payload": payload},
                    }
                )
                if carrier.close_code is not None:
                    break
        except ConnectionClosed:
            pass
        await carrier.wait_closed(timeout=20)
    assert (
        "faster than real time"
        in wait_for_status(api, twiml["session"]["session_id"], "failed")["error"]
    )

    # Meanwhile the server answers another call at once.
    async with SessionClient(key_url, headers={"X-API-Key": secure_server.api_key}) as other:
        await other.wait_for("session.ready", timeout=30)
        await other.send_event({"type": "input.text", "text": "Are you there?"})
        assert (await other.wait_for("transcript.agent", timeout=30))[
            "text"
        ] == "Still here for you."
        await other.send_event({"type": "session.end"})
        await other.wait_for("session.ended", timeout=10)
    assert_clean_log(secure_server)


# --- Keys and tokens stay out of the logs (item 9) ------------------------------------------


async def test_keys_and_tokens_never_reach_the_log(secure_server, api):
    account = api.post("/v1/accounts", json={"name": "log-test"}).json()
    key = api.post("/v1/api-keys", json={"account_id": account["id"], "name": "k"}).json()["secret"]
    tenant = httpx.Client(base_url=secure_server.url, headers={"X-API-Key": key}, timeout=30)
    agent = scripted_agent(tenant)
    path = f"/v1/agents/{agent['id']}/session"

    # The old query form still works...
    async with SessionClient(secure_server.ws_url(f"{path}?api_key={key}")) as query_client:
        await query_client.wait_for("session.ready", timeout=30)
        await query_client.send_event({"type": "session.end"})
    # ...and the key can ride in Sec-WebSocket-Protocol instead, answered with `switchboard`.
    async with connect(
        secure_server.ws_url(path), subprotocols=["switchboard", f"key.{key}"]
    ) as ws:
        assert ws.subprotocol == "switchboard"
        assert json.loads(await ws.recv())["type"] == "session.ready"
        await ws.send(json.dumps({"type": "session.end"}))
    # A wrong key in the subprotocol is refused like any wrong key.
    code, _reason, _ = await closing(
        secure_server.ws_url(path), subprotocols=["switchboard", "key.sk_wrong"]
    )
    assert code == 4401
    # A session's token, in the query and in the subprotocol.
    tokens = []
    for how in ("query", "subprotocol"):
        created = tenant.post(f"/v1/agents/{agent['id']}/sessions").json()
        token = created["websocket_url"].split("token=")[1]
        tokens.append(token)
        url = created["websocket_url"] if how == "query" else created["websocket_url"].split("?")[0]
        async with connect(
            url, subprotocols=["switchboard", f"token.{token}"] if how == "subprotocol" else None
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session.ready"
            await ws.send(json.dumps({"type": "session.end"}))
    # Plain HTTP requests with secrets in the query are redacted from the access log as well.
    httpx.get(
        f"{secure_server.url}/health?api_key={key}&token={tokens[0]}&ticket=t1ck3t-s3cr3t",
        timeout=10,
    )
    await asyncio.sleep(1)
    log = secure_server.log()
    assert "api_key=[redacted]" in log and "token=[redacted]" in log
    for secret in (key, *tokens, "t1ck3t-s3cr3t", SECRET):
        assert secret not in log


# --- Dashboard log-ins (item 10) ------------------------------------------------------------


def login(server, key: str) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
    response = client.post("/login", data={"api_key": key, "next": "/"})
    assert response.status_code == 303, response.text
    assert key not in response.headers["set-cookie"]
    return client


def test_the_dashboard_cookie_is_a_server_side_log_in(secure_server, api):
    account = api.post("/v1/accounts", json={"name": "dash"}).json()
    created = api.post("/v1/api-keys", json={"account_id": account["id"], "name": "dash"}).json()
    key = created["secret"]

    client = login(secure_server, key)
    cookie = client.cookies[LOGIN_COOKIE]
    assert cookie != key and len(cookie) >= 40
    assert client.get("/").status_code == 200
    assert (
        client.post(
            "/v1/agents/agt_missing/webrtc/offer", json={"sdp": "v=0", "type": "offer"}
        ).status_code
        == 400
    )

    # Logging out ends the log-in on the server: the same cookie, replayed, is refused.
    assert client.post("/logout").status_code == 303
    replay = httpx.Client(
        base_url=secure_server.url,
        cookies={LOGIN_COOKIE: cookie},
        follow_redirects=False,
        timeout=30,
    )
    assert replay.get("/").status_code == 303 and replay.post("/agents/x/pause").status_code == 401

    # Revoking the key ends its log-ins at once.
    client = login(secure_server, key)
    assert client.get("/").status_code == 200
    assert api.delete(f"/v1/api-keys/{created['id']}").status_code == 200
    assert client.get("/").status_code == 303
    assert client.post("/agents/x/pause").json()["code"] == "unauthorized"


def test_the_dashboard_cookie_is_secure_when_the_public_url_is_https(tmp_path):
    for base, secure in (("https://voice.example.com", True), ("http://127.0.0.1:8000", False)):
        settings = Settings(
            data_dir=tmp_path / base.split(":")[0],
            api_key=ADMIN_KEY,
            preload_pipelines=[],
            pipelines_path=[TEST_PIPELINES],
            public_base_url=base,
        )
        with TestClient(create_app(settings)) as client:
            response = client.post("/login", data={"api_key": ADMIN_KEY}, follow_redirects=False)
            assert response.status_code == 303
            assert ("secure" in response.headers["set-cookie"].lower()) == secure


async def test_a_login_brute_force_gets_429(secure_server):
    async with httpx.AsyncClient(base_url=secure_server.url, timeout=30) as client:
        attempts = await asyncio.gather(
            *(
                client.post("/login", data={"api_key": f"sk_guess_{i}"})
                for i in range(LOGIN_FAILURES * 4)
            )
        )
        statuses = [a.status_code for a in attempts]
        assert (
            statuses.count(401) == LOGIN_FAILURES and statuses.count(429) == LOGIN_FAILURES * 3
        ), statuses
        refusal = next(a for a in attempts if a.status_code == 429)
        assert (
            "Too many failed log-ins" in refusal.text and int(refusal.headers["Retry-After"]) >= 1
        )
        # Even the right key is refused while the address is blocked: no oracle for the guesser.
        blocked = await client.post("/login", data={"api_key": secure_server.api_key})
        assert blocked.status_code == 429


# --- Secret key rotation across a restart (item 11) -----------------------------------------


async def test_secret_rotation_across_a_restart(tmp_path, scripted_llm):
    storage = production_storage_env() if TEST_BACKEND == "postgres" else {}
    old, new = "rotation-old-secret-a1b2c3", "rotation-new-secret-d4e5f6"
    data = tmp_path / "rotation"
    server = start_server(
        data,
        preload=["scripted"],
        api_key=ADMIN_KEY,
        env={**storage, "SCRIPTED_LLM_URL": scripted_llm.url, "SWITCHBOARD_SECRET_KEY": old},
    )
    port = int(server.url.rsplit(":", 1)[1])
    try:
        with server.client() as api:
            agent = scripted_agent(api)
            before = [api.post(f"/v1/agents/{agent['id']}/sessions").json() for _ in range(2)]
        server.stop()
        server = start_server(
            data,
            preload=["scripted"],
            port=port,
            env={
                **storage,
                "SCRIPTED_LLM_URL": scripted_llm.url,
                "SWITCHBOARD_SECRET_KEY": new,
                "SWITCHBOARD_PREVIOUS_SECRET_KEYS": json.dumps([old]),
            },
        )
        async with SessionClient(
            before[0]["websocket_url"]
        ) as joined:  # signed with the old key: still valid
            await joined.wait_for("session.ready", timeout=30)
            await joined.send_event({"type": "session.end"})
        with server.client() as api:
            after = api.post(f"/v1/agents/{agent['id']}/sessions").json()
        token = after["websocket_url"].split("token=")[1]
        assert (
            TokenSigner(new).verify(token, "session")["sid"] == after["session_id"]
        )  # new tokens: the new key
        with pytest.raises(TokenError):
            TokenSigner(old).verify(token, "session")
        server.stop()
        server = start_server(
            data,
            preload=["scripted"],
            port=port,
            env={**storage, "SCRIPTED_LLM_URL": scripted_llm.url, "SWITCHBOARD_SECRET_KEY": new},
        )
        code, reason, texts = await closing(before[1]["websocket_url"])  # the old key was dropped
        assert (code, json.loads(texts[0])["message"]) == (4401, "bad token signature")
        log = server.log()
        assert old not in log and new not in log
        assert "SWITCHBOARD_SECRET_KEY is not set" not in log
    finally:
        server.stop()


def test_a_server_without_a_secret_key_warns(tmp_path):
    server = start_server(tmp_path / "nokey", preload=[], env={"SWITCHBOARD_SECRET_KEY": ""})
    try:
        assert (
            "SWITCHBOARD_SECRET_KEY is not set: signing tokens with a secret generated and stored"
            in server.log()
        )
    finally:
        server.stop()


# --- WebSocket entry points under random input ----------------------------------------------

FUZZ_CASES = 80
CLOSE_CODES = {4400, 4401, 4404, 4409}


def _random_text(rng: random.Random, limit: int) -> str:
    alphabet = string.printable + "éü🙂\u0000\u202e" + "._-=&?%"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, limit)))


def _random_message(rng: random.Random):
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    if kind == 1:
        return _random_text(rng, 300)
    if kind == 2:
        return json.dumps(
            {
                "event": rng.choice(["start", "media", "connected", "stop"]),
                "start": rng.choice(
                    [
                        None,
                        {},
                        "x",
                        [1],
                        {"customParameters": {"token": _random_text(rng, 50)}},
                        {
                            "customParameters": "x",
                            "custom_parameters": [],
                            "media_format": 1,
                            "streamSid": 5,
                            "streamId": ["x"],
                        },
                        {
                            "streamSid": _random_text(rng, 10),
                            "streamId": "x",
                            "media_format": {"encoding": _random_text(rng, 5)},
                        },
                    ]
                ),
                "stream_id": rng.choice(["", "s", None]),
            }
        )
    if kind == 3:
        return json.dumps(
            {
                "type": rng.choice(["session.end", "input.text", "tool.result", "x"]),
                "text": _random_text(rng, 20),
            }
        )
    if kind == 4:
        return json.dumps(rng.choice([[], 1, None, "start", {"event": {"a": 1}}]))
    return ""


async def test_websocket_entry_points_fuzz(secure_server, api):
    rng = random.Random(1414)
    agent = scripted_agent(api)
    session = api.post(f"/v1/agents/{agent['id']}/sessions").json()
    ids = [
        agent["id"],
        session["session_id"],
        "agt_missing",
        "x" * 300,
        "%00",
        "%C3%A9",
        "..%2F..",
        quote("' OR 1=1 --"),
    ]
    paths = [
        "/v1/agents/{id}/session",
        "/v1/sessions/{id}/ws",
        "/v1/sessions/twilio/stream",
        "/v1/sessions/telnyx/stream",
        "/v1/sessions/plivo/stream",
    ]
    started = time.monotonic()

    async def one(case: int):
        path = rng.choice(paths).replace("{id}", rng.choice(ids))
        query = "&".join(
            f"{quote(rng.choice(['api_key', 'token', 'sample_rate', 'ticket', 'x', _random_text(rng, 5)]), safe='')}="
            f"{quote(_random_text(rng, rng.choice([10, 200, 500])), safe='')}"  # URLs over ~8 KB get uvicorn's 414
            for _ in range(rng.randint(0, 3))
        )
        protocols = rng.choice(
            [
                None,
                ["switchboard"],
                ["switchboard", "key.sk_" + "".join(rng.choices(string.ascii_letters, k=20))],
                [
                    "token."
                    + "".join(rng.choices(string.ascii_letters + "._-", k=rng.randint(1, 200)))
                ],
                ["key."],
                ["x" * 100],
            ]
        )
        messages = [_random_message(rng)] * rng.choice([1, 5])
        try:
            code, reason, _ = await closing(
                secure_server.ws_url(f"{path}?{query}"), messages, protocols, timeout=20
            )
        except TimeoutError:
            raise AssertionError(
                ("timeout", case, path, query[:300], protocols, messages[0][:100])
            ) from None
        except (
            InvalidStatus
        ) as exc:  # refused before the WebSocket opened (e.g. an unparseable URL)
            assert exc.response.status_code in (400, 403, 404), (case, path, exc)
            return
        assert code in CLOSE_CODES and reason, (
            case,
            path,
            query[:200],
            protocols,
            messages[0][:100],
            code,
            reason,
        )

    for batch in range(0, FUZZ_CASES, 10):
        await asyncio.gather(*(one(case) for case in range(batch, batch + 10)))
    assert time.monotonic() - started < 180
    assert api.get(f"/v1/sessions/{session['session_id']}").json()["status"] == "created"
    assert httpx.get(secure_server.url + "/health", timeout=10).status_code == 200
    assert_clean_log(secure_server)
