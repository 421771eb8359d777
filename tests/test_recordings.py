"""Recordings on shared storage: the local-directory and S3 stores (against a real
S3-compatible server, moto's, on a loopback port), moving a finished call's WAV there,
downloading it from another node, the retention sweep and the per-account storage cap.
"""

import asyncio
import time
import uuid
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from app import recordings
from app.client import SessionClient
from app.settings import Settings
from app.storage.db import Database
from app.storage.ids import utcnow
from app.storage.models import Account, Session
from processors.recording import WavAppender
from tests.audio import rms, speech
from tests.helpers.calls import inline_call, wait_for_recording, wait_for_status, wav_samples
from tests.helpers.servers import free_port, start_server
from tests.helpers.storage import production_storage_env

S3_CREDENTIALS = {
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
    "region_name": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A local S3-compatible server."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def new_bucket(endpoint: str) -> tuple[str, "boto3.client"]:
    client = boto3.client("s3", endpoint_url=endpoint, **S3_CREDENTIALS)
    name = f"recordings-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name, client


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_RECORDINGS_URL": f"s3://{bucket}/calls",
        "SWITCHBOARD_RECORDINGS_S3_ENDPOINT_URL": endpoint,
        "SWITCHBOARD_RECORDINGS_S3_REGION": "us-east-1",
        "SWITCHBOARD_RECORDINGS_S3_ACCESS_KEY_ID": "test",
        "SWITCHBOARD_RECORDINGS_S3_SECRET_ACCESS_KEY": "test",
    }


@pytest.fixture(params=["local", "s3"])
async def store_settings(request, tmp_path, s3_endpoint):
    """Settings for a store of each kind, and a migrated SQLite database holding one
    session that is recording."""
    fields = {"data_dir": tmp_path / "node", "recording_retention_days": 1}
    if request.param == "s3":
        bucket, _ = new_bucket(s3_endpoint)
        fields |= {
            "recordings_url": f"s3://{bucket}/calls",
            "recordings_s3_endpoint_url": s3_endpoint,
            "recordings_s3_region": "us-east-1",
            "recordings_s3_access_key_id": "test",
            "recordings_s3_secret_access_key": "test",
        }
    settings = Settings(**fields)
    db = Database(settings.resolved_database_url())
    await db.migrate()
    async with db.sessions() as s:
        s.add(Account(id="acc_1", name="One"))
        s.add(
            Session(
                id="ses_1",
                account_id="acc_1",
                status="completed",
                expires_at=utcnow(),
                recording_status="recording",
            )
        )
        await s.commit()
    yield settings, db
    await db.dispose()


async def test_finalise_moves_the_recording_to_the_store_and_can_run_twice(store_settings):
    settings, db = store_settings
    live = recordings.live_path(settings, "ses_1")
    wav = WavAppender(live, 16000, 2)
    wav.append(np.arange(32000, dtype=np.int16).tobytes())
    wav.close()
    written = live.read_bytes()

    for _ in range(2):  # a job run twice, or again after a crash part-way
        await recordings.finalise_recording(settings, db, "ses_1", live)
        assert not live.exists()
        async with db.sessions() as s:
            session = await s.get(Session, "ses_1")
        stored = await recordings.open_recording(settings, session, "this-node")
        assert stored.size == len(written) and b"".join([c async for c in stored.chunks]) == written
        assert (session.recording_status, session.recording_bytes) == ("available", len(written))
    assert await recordings.recording_store(settings).size("ses_1.wav") == len(written)

    # Not yet past retention: the sweep leaves it. Past it: deleted once, however many sweeps.
    assert await recordings.expire_recordings(settings, db) == 0
    later = settings.model_copy(update={"recording_retention_days": 0})
    # Two nodes sweeping at once: deleted (twice, harmlessly), marked expired once.
    assert sorted(
        await asyncio.gather(*(recordings.expire_recordings(later, db) for _ in range(2)))
    ) == [0, 1]
    assert await recordings.expire_recordings(later, db) == 0
    assert await recordings.open_recording(settings, session, "this-node") is None
    async with db.sessions() as s:
        session = await s.get(Session, "ses_1")
    assert session.recording_status == "expired" and "retention" in session.recording_reason
    # Finalising again after expiry brings nothing back.
    await recordings.finalise_recording(settings, db, "ses_1", live)
    async with db.sessions() as s:
        assert (await s.get(Session, "ses_1")).recording_status == "expired"


async def short_call(api, *, question: bytes | None = None, **fields) -> dict:
    """An inline call on the `scripted` pipeline: the greeting, optionally a caller turn, then
    the caller hangs up. Returns the ended session."""
    call = inline_call(api, greeting="Hello, thanks for calling the clinic.", **fields)
    async with SessionClient(call["url"]) as client:
        await client.wait_for("agent.speech.stopped", timeout=30)
        if question:
            await client.stream(question)
            await client.wait_for("agent.speech.stopped", timeout=30, count=2)
        await client.send_event({"type": "session.end"})
        await client.wait_for("session.ended", timeout=10)
    return wait_for_status(api, call["session_id"], "completed")


async def test_a_recording_made_on_one_node_downloads_from_another(
    tmp_path, s3_endpoint, scripted_llm
):
    """Two nodes, each with its own disk, sharing PostgreSQL, Redis and an S3 bucket."""
    scripted_llm.reset()
    scripted_llm.script("Sure, we open at nine.")
    bucket, s3 = new_bucket(s3_endpoint)
    shared = {
        **production_storage_env(),
        **s3_env(s3_endpoint, bucket),
        "SCRIPTED_LLM_URL": scripted_llm.url,
    }
    node_a = start_server(
        tmp_path / "a", preload=["scripted"], env={**shared, "SWITCHBOARD_NODE_ID": "node-a"}
    )
    node_b = start_server(
        tmp_path / "b", preload=[], env={**shared, "SWITCHBOARD_NODE_ID": "node-b"}
    )
    try:
        with node_a.client() as api_a, node_b.client() as api_b:
            session = await short_call(
                api_a, question=speech("What time do you open tomorrow?", tail_secs=1.5)
            )
            recording = wait_for_recording(api_b, session["session_id"], "available")
            response = api_b.get(f"/v1/sessions/{session['session_id']}/recording")
    finally:
        node_a.stop()
        node_b.stop()
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert (
        len(response.content) == recording["size_bytes"] == int(response.headers["content-length"])
    )
    samples = wav_samples(response.content)
    assert (
        rms(samples[:, 0].tobytes()) > 100 and rms(samples[:, 1].tobytes()) > 100
    )  # the caller and the agent
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"calls/{session['session_id']}.wav"]
    assert not list((tmp_path / "a").rglob("*.wav")), "node A keeps no copy once the call has ended"


async def test_a_call_resumed_on_another_node_keeps_one_whole_recording(
    tmp_path, s3_endpoint, scripted_llm
):
    """The client drops on node A and reconnects through node B: the recording has both parts."""
    scripted_llm.reset()
    scripted_llm.script("Nice to meet you, Alice.", "Your name is Alice.")
    bucket, s3 = new_bucket(s3_endpoint)
    shared = {
        **production_storage_env(),
        **s3_env(s3_endpoint, bucket),
        "SCRIPTED_LLM_URL": scripted_llm.url,
        "SWITCHBOARD_RESUME_GRACE_SECS": "4",
    }
    node_a = start_server(
        tmp_path / "a", preload=["scripted"], env={**shared, "SWITCHBOARD_NODE_ID": "node-a"}
    )
    node_b = start_server(
        tmp_path / "b", preload=["scripted"], env={**shared, "SWITCHBOARD_NODE_ID": "node-b"}
    )
    try:
        with node_a.client() as api_a, node_b.client() as api_b:
            session = inline_call(api_a, greeting="Hello, this is the clinic.")
            async with SessionClient(session["url"]) as client:
                await client.wait_for("agent.speech.stopped", timeout=30)
                await client.send_event({"type": "input.text", "text": "Hi, my name is Alice."})
                await client.wait_for("agent.speech.stopped", timeout=30, count=2)
                await asyncio.sleep(1.0)
            deadline = time.monotonic() + 10
            while not api_b.get(f"/v1/sessions/{session['session_id']}").json()["resumable_until"]:
                assert time.monotonic() < deadline, "the session never became resumable"
                await asyncio.sleep(0.05)
            # What node A recorded is in the bucket before the session can be resumed.
            first_part = s3.get_object(Bucket=bucket, Key=f"calls/{session['session_id']}.wav")[
                "Body"
            ].read()
            async with SessionClient(
                session["url"].replace(
                    node_a.url.replace("http", "ws"), node_b.url.replace("http", "ws")
                )
            ) as client:
                ready = await client.wait_for("session.ready", timeout=30)
                assert ready["resumed"] is True
                await client.send_event({"type": "input.text", "text": "What is my name?"})
                await client.wait_for("agent.speech.stopped", timeout=30)
                await client.send_event({"type": "session.end"})
                await client.wait_for("session.ended", timeout=10)
            wait_for_recording(api_a, session["session_id"], "available")
            response = api_a.get(f"/v1/sessions/{session['session_id']}/recording")
            await asyncio.sleep(5)  # node A's grace timer sees the call resumed elsewhere
    finally:
        node_a.stop()
        node_b.stop()
    on_a, whole = wav_samples(first_part), wav_samples(response.content)
    assert rms(on_a[:, 1].tobytes()) > 100  # the greeting and the first answer
    assert len(whole) > len(on_a) and (whole[: len(on_a)] == on_a).all(), (
        "node B carried on node A's recording"
    )
    assert rms(whole[len(on_a) :, 1].tobytes()) > 100  # the answer given on node B
    assert not list(tmp_path.rglob("*.wav")), "neither node keeps a copy"


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory, scripted_llm):
    """Recordings kept 20 s, swept every second; 1000 bytes of recordings per account by default."""
    server = start_server(
        tmp_path_factory.mktemp("capped"),
        preload=["scripted"],
        env={
            "SCRIPTED_LLM_URL": scripted_llm.url,
            "SWITCHBOARD_RECORDING_RETENTION_DAYS": str(20 / 86400),
            "SWITCHBOARD_RECORDING_SWEEP_SECS": "1",
            "SWITCHBOARD_RECORDING_QUOTA_BYTES": "1000",
        },
    )
    yield server
    server.stop()


def account_client(server, **fields) -> httpx.Client:
    """A client with the key of a new account."""
    with server.client() as admin:
        account = admin.post("/v1/accounts", json={"name": "Tenant", **fields})
        assert account.status_code == 201, account.text
        key = admin.post(
            "/v1/api-keys", json={"account_id": account.json()["id"], "name": "k"}
        ).json()["secret"]
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30)


async def test_an_account_over_its_recording_cap_gets_calls_unrecorded_until_old_ones_expire(
    capped_server,
):
    api = account_client(capped_server)
    roomy = account_client(capped_server, recording_quota_bytes=10**9)
    with api, roomy:
        first = await short_call(api)
        stored = wait_for_recording(api, first["session_id"], "available")
        assert stored["size_bytes"] > 1000 and stored["expires_at"]

        # Over its cap (the server default): the call goes on, unrecorded, and says why.
        second = await short_call(api)
        assert (
            second["recording"]["status"] == "skipped"
            and "cap is 1000" in second["recording"]["reason"]
        )
        refused = api.get(f"/v1/sessions/{second['session_id']}/recording")
        assert refused.status_code == 404 and refused.json()["code"] == "recording_not_found"
        assert f"session {second['session_id']}: not recorded" in capped_server.log()

        # A burst of calls at once: every one goes ahead, none recorded.
        burst = [inline_call(api, greeting="Hello.") for _ in range(3)]

        async def hang_up_after_greeting(url: str) -> None:
            async with SessionClient(url) as client:
                await client.wait_for("agent.speech.stopped", timeout=60)
                await client.send_event({"type": "session.end"})
                await client.wait_for("session.ended", timeout=10)

        await asyncio.gather(*(hang_up_after_greeting(call["url"]) for call in burst))
        for call in burst:
            ended = wait_for_status(api, call["session_id"], "completed")
            assert ended["recording"]["status"] == "skipped", ended

        # An account with its own, larger cap records every call.
        for _ in range(2):
            call = await short_call(roomy)
            wait_for_recording(roomy, call["session_id"], "available")

        # Past the retention period the sweep deletes the first recording, freeing the account's space.
        expired = wait_for_recording(api, first["session_id"], "expired", timeout=30)
        assert "retention" in expired["reason"]
        gone = api.get(f"/v1/sessions/{first['session_id']}/recording")
        assert gone.status_code == 404 and gone.json()["code"] == "recording_expired"
        assert not list(Path(capped_server.data_dir, "recordings").glob(f"{first['session_id']}*"))
        third = await short_call(api)
        wait_for_recording(api, third["session_id"], "available")


def test_accounts_carry_their_recording_cap(capped_server):
    with capped_server.client() as admin:
        created = admin.post(
            "/v1/accounts", json={"name": "Capped", "recording_quota_bytes": 5_000_000}
        )
        assert created.status_code == 201 and created.json()["recording_quota_bytes"] == 5_000_000
        patched = admin.patch(
            f"/v1/accounts/{created.json()['id']}", json={"recording_quota_bytes": None}
        )
        assert patched.json()["recording_quota_bytes"] is None
        negative = admin.post("/v1/accounts", json={"name": "Bad", "recording_quota_bytes": -1})
        assert negative.status_code == 422
