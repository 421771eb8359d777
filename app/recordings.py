"""Call recordings on storage every node shares.

A call writes its stereo WAV on this node's disk while it runs (`live_path`); when it ends,
`finalise_recording` moves the file to the recording store — a local directory (the default) or
an S3-compatible bucket (`SWITCHBOARD_RECORDINGS_URL=s3://bucket/prefix`) — from where any node
streams it. Also here: the per-account storage cap checked as a call starts, and the retention
sweep that deletes old recordings.
"""

import asyncio
import os
import random
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from fastapi.responses import StreamingResponse
from loguru import logger

from app.errors import APIError
from app.settings import Settings
from app.storage import recordings as recording_db
from app.storage.db import Database
from app.storage.ids import utcnow
from app.storage.models import Session

CHUNK_BYTES = 256 * 1024
SWEEP_BATCH = 100


def live_path(settings: Settings, session_id: str) -> Path:
    """Where a call on this node writes its recording while it runs."""
    return settings.data_dir / "recordings-live" / recording_key(session_id)


def recording_key(session_id: str) -> str:
    return f"{session_id}.wav"


@dataclass
class StoredRecording:
    size: int
    chunks: AsyncIterator[bytes]


class RecordingStore:
    """Where finished recordings live, by key."""

    async def put(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key` (replacing what was there)."""
        raise NotImplementedError

    async def open(self, key: str) -> StoredRecording | None:
        """The recording's size and its bytes as a stream, or None if there is none."""
        raise NotImplementedError

    async def size(self, key: str) -> int | None:
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        """Delete it; deleting a missing recording is not an error."""
        raise NotImplementedError


class LocalRecordingStore(RecordingStore):
    """A directory on this node's disk (or a volume every node mounts)."""

    def __init__(self, root: Path):
        self.root = root

    async def put(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put, key, path)

    def _put(self, key: str, path: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".{key}.partial"
        partial.unlink(missing_ok=True)
        try:
            os.link(path, partial)  # the same file system: no copy
        except OSError:
            shutil.copyfile(path, partial)
        os.replace(partial, self.root / key)

    async def open(self, key: str) -> StoredRecording | None:
        return await open_file(self.root / key)

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread((self.root / key).stat)).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread((self.root / key).unlink, missing_ok=True)


class S3RecordingStore(RecordingStore):
    """An S3-compatible bucket, through boto3 in worker threads."""

    def __init__(self, bucket: str, prefix: str, **client_options):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = boto3.client(
            "s3", **{k: v for k, v in client_options.items() if v is not None}
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def put(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._client.upload_file, str(path), self.bucket, self._key(key))

    async def open(self, key: str) -> StoredRecording | None:
        try:
            response = await asyncio.to_thread(
                self._client.get_object, Bucket=self.bucket, Key=self._key(key)
            )
        except self._client.exceptions.NoSuchKey:
            return None
        body = response["Body"]

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                    yield chunk
            finally:
                body.close()

        return StoredRecording(response["ContentLength"], chunks())

    async def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            response = await asyncio.to_thread(
                self._client.head_object, Bucket=self.bucket, Key=self._key(key)
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return response["ContentLength"]

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=self._key(key))


def recording_store(settings: Settings) -> RecordingStore:
    """The store `settings` name (one per process and configuration)."""
    return _store(
        settings.recordings_url or str(settings.data_dir / "recordings"),
        settings.recordings_s3_endpoint_url,
        settings.recordings_s3_region,
        settings.recordings_s3_access_key_id,
        settings.recordings_s3_secret_access_key,
    )


@lru_cache
def _store(url: str, endpoint_url, region, access_key_id, secret_access_key) -> RecordingStore:
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3RecordingStore(
            parsed.netloc,
            parsed.path,
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
        )
    if parsed.scheme == "file":
        return LocalRecordingStore(Path(parsed.path))
    if parsed.scheme:
        raise ValueError(
            f"SWITCHBOARD_RECORDINGS_URL: unsupported scheme '{parsed.scheme}' (s3:// or a directory)"
        )
    return LocalRecordingStore(Path(url))


async def open_file(path: Path) -> StoredRecording | None:
    """A file's bytes as a stream, as big as it was when opened (a live recording grows)."""
    try:
        file = await asyncio.to_thread(open, path, "rb")  # closed when the stream ends
    except FileNotFoundError:
        return None
    size = os.fstat(file.fileno()).st_size

    async def chunks() -> AsyncIterator[bytes]:
        left = size
        try:
            while left > 0 and (
                chunk := await asyncio.to_thread(file.read, min(CHUNK_BYTES, left))
            ):
                left -= len(chunk)
                yield chunk
        finally:
            file.close()

    return StoredRecording(size, chunks())


async def open_recording(
    settings: Settings, session: Session, node_id: str
) -> StoredRecording | None:
    """A session's recording: for a call this node (`node_id`) runs or ran last, the file it writes while the
    call goes on, else the stored one. (In that order: the stored copy is complete before the live
    file is removed.)"""
    live = await open_file(live_path(settings, session.id)) if session.host == node_id else None
    return live or await recording_store(settings).open(recording_key(session.id))


async def recording_response(
    settings: Settings, session: Session, node_id: str, headers: dict | None = None
) -> StreamingResponse:
    """The session's recording as a streamed WAV, or a 404 saying why there is none."""
    if session.recording_status == "expired":
        raise APIError(
            404,
            "recording_expired",
            f"session '{session.id}': its recording was {session.recording_reason}",
        )
    recording = await open_recording(settings, session, node_id)
    if recording is None:
        raise APIError(404, "recording_not_found", f"session '{session.id}' has no recording")
    return StreamingResponse(
        recording.chunks,
        media_type="audio/wav",
        headers={
            **(headers or {}),
            "Content-Length": str(recording.size),
            "Content-Disposition": f'inline; filename="{recording_key(session.id)}"',
        },
    )


async def start_recording(
    settings: Settings, db: Database, session_id: str, account_id: str
) -> bool:
    """Whether a starting (or resumed) call records. An account at or over its recording
    storage cap gets none, the reason logged and kept on the session; this never fails the call."""
    try:
        async with db.sessions() as s:
            session_status = await recording_db.status(s, session_id)
            if session_status == "skipped":
                return False  # a resumed call carries on as it began
            if session_status == "recording":
                await _continue(settings, session_id)
                return True
            used, quota = await recording_db.usage_and_quota(
                s, account_id, settings.recording_quota_bytes
            )
            if quota is not None and used >= quota:
                reason = f"the account's recordings use {used} bytes, its cap is {quota}"
                logger.warning(f"session {session_id}: not recorded: {reason}")
                await recording_db.set_status(s, session_id, "skipped", reason)
                return False
            await recording_db.set_status(s, session_id, "recording")
            return True
    except Exception:
        logger.exception(f"session {session_id}: could not prepare its recording; not recording it")
        return False


async def _continue(settings: Settings, session_id: str) -> None:
    """A call resumed on this node carries on its recording: what another node recorded before
    the client dropped was stored then, and comes here to be appended to."""
    path = live_path(settings, session_id)
    if await asyncio.to_thread(path.exists):
        return  # it was recorded here
    stored = await recording_store(settings).open(recording_key(session_id))
    if stored is None:
        return
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    file = await asyncio.to_thread(open, partial, "wb")
    try:
        async for chunk in stored.chunks:
            await asyncio.to_thread(file.write, chunk)
    finally:
        await asyncio.to_thread(file.close)
    await asyncio.to_thread(os.replace, partial, path)


async def store_so_far(settings: Settings, session_id: str) -> None:
    """Store what a call has recorded so far, keeping the local file: its client dropped and may
    reconnect on another node (see `_continue`), or here."""
    path = live_path(settings, session_id)
    if await asyncio.to_thread(path.exists):
        await recording_store(settings).put(recording_key(session_id), path)


async def finalise_recording(
    settings: Settings, db: Database, session_id: str, local_path: Path
) -> None:
    """Move an ended call's recording from this node's disk to the recording store, and mark it
    available on the session. Idempotent: run again (or after a crash part-way), it finishes what
    is left and changes nothing else."""
    key = recording_key(session_id)
    try:
        size = (await asyncio.to_thread(local_path.stat)).st_size
    except FileNotFoundError:
        size = None
    if size is not None:
        await recording_store(settings).put(key, local_path)
    else:
        size = await recording_store(settings).size(
            key
        )  # moved by an earlier run, or never written
    async with db.sessions() as s:
        await recording_db.mark_stored(s, session_id, size)
    await asyncio.to_thread(local_path.unlink, missing_ok=True)
    if size is not None:
        logger.info(f"session {session_id}: recording stored ({size} bytes)")


async def finalise_left_behind(settings: Settings, db: Database) -> None:
    """Store the recordings a stopped server on this node left on its disk. Run before the
    node takes calls: every live file then belongs to a call that has ended here, or that
    was resumed on another node (which took the recording with it)."""
    for path in sorted((settings.data_dir / "recordings-live").glob("*.wav")):
        try:
            async with db.sessions() as s:
                session = await s.get(Session, path.stem)
            if session is not None and session.status == "active":
                await asyncio.to_thread(path.unlink)
                continue
            await finalise_recording(settings, db, path.stem, path)
        except Exception:
            logger.exception(f"session {path.stem}: could not store the recording left at {path}")


async def expire_recordings(settings: Settings, db: Database) -> int:
    """Delete the recordings stored more than the retention period ago; how many this call expired.
    Several nodes may sweep at once: deleting twice is harmless and each session is marked once."""
    if settings.recording_retention_days is None:
        return 0
    cutoff = utcnow() - timedelta(days=settings.recording_retention_days)
    reason = f"deleted after the {settings.recording_retention_days:g}-day retention period"
    store = recording_store(settings)
    expired = 0
    while True:
        async with db.sessions() as s:
            batch = await recording_db.stored_before(s, cutoff, SWEEP_BATCH)
        for session_id in batch:
            await store.delete(recording_key(session_id))
            async with db.sessions() as s:
                expired += await recording_db.mark_expired(s, session_id, reason)
        if len(batch) < SWEEP_BATCH:
            break
    if expired:
        logger.info(f"recordings: {expired} past the retention period deleted")
    return expired


async def sweep_forever(settings: Settings, db: Database) -> None:
    """Expire old recordings every `recording_sweep_secs`, starting at a random point of the
    interval so that nodes started together don't sweep together."""
    await asyncio.sleep(random.uniform(0, settings.recording_sweep_secs))
    while True:
        try:
            await expire_recordings(settings, db)
        except Exception:
            logger.exception("recordings: the retention sweep failed; trying again next time")
        await asyncio.sleep(settings.recording_sweep_secs)
