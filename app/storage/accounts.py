"""Accounts, hashed API keys and server secrets."""

import hashlib
import hmac
import secrets

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.ids import new_id, utcnow
from app.storage.models import DEFAULT_ACCOUNT_ID, Account, ApiKey, ServerSecret


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> str:
    return "sk_" + secrets.token_urlsafe(32)


async def ensure_default_account(db: AsyncSession) -> None:
    if await db.get(Account, DEFAULT_ACCOUNT_ID) is None:
        db.add(Account(id=DEFAULT_ACCOUNT_ID, name="Default"))
        await db.commit()


async def add_key(
    db: AsyncSession, account_id: str, name: str, secret: str, *, is_admin: bool = False
) -> ApiKey:
    key = ApiKey(
        id=new_id("key"),
        account_id=account_id,
        name=name,
        prefix=secret[:8],
        key_hash=hash_key(secret),
        is_admin=is_admin,
    )
    db.add(key)
    await db.commit()
    return key


async def find_key(
    db: AsyncSession, secret: str, *, include_revoked: bool = False
) -> ApiKey | None:
    """The live key whose hash matches `secret`, compared in constant time."""
    digest = hash_key(secret)
    key = await db.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    if key.revoked_at is not None and not include_revoked:
        return None
    return key


async def has_admin_key(db: AsyncSession) -> bool:
    return (
        await db.scalar(
            select(ApiKey.id).where(ApiKey.is_admin, ApiKey.revoked_at.is_(None)).limit(1)
        )
        is not None
    )


async def ensure_bootstrap_key(db: AsyncSession, configured: str | None) -> str | None:
    """Make the admin key usable. Returns a newly generated secret (to print once), or None.
    Another process doing the same at the same moment wins quietly."""
    try:
        await ensure_default_account(db)
        if configured:
            if await find_key(db, configured, include_revoked=True) is None:
                await add_key(
                    db,
                    DEFAULT_ACCOUNT_ID,
                    "bootstrap (SWITCHBOARD_API_KEY)",
                    configured,
                    is_admin=True,
                )
            return None
        if await has_admin_key(db):
            return None
        secret = generate_key()
        await add_key(db, DEFAULT_ACCOUNT_ID, "bootstrap (generated)", secret, is_admin=True)
        return secret
    except IntegrityError:
        await db.rollback()
        return None


async def server_secret(db: AsyncSession, name: str) -> str:
    """A random secret shared by every server process, created on first use."""
    row = await db.get(ServerSecret, name)
    if row is None:
        row = ServerSecret(name=name, value=secrets.token_hex(32))
        db.add(row)
        try:
            await db.commit()
        except IntegrityError:  # another process created it first
            await db.rollback()
            row = await db.get_one(ServerSecret, name)
    return row.value


async def touch_key(db: AsyncSession, key: ApiKey) -> None:
    """Note the key's use, at most once a minute so requests don't each write."""
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        key.last_used_at = now
        await db.commit()


async def create_account(
    db: AsyncSession, name: str, max_concurrent_calls: int | None, recording_quota_bytes: int | None
) -> Account:
    account = Account(
        id=new_id("acc"),
        name=name,
        max_concurrent_calls=max_concurrent_calls,
        recording_quota_bytes=recording_quota_bytes,
    )
    db.add(account)
    await db.commit()
    return account


async def list_accounts(db: AsyncSession, *, limit: int, offset: int) -> tuple[list[Account], int]:
    total = await db.scalar(select(func.count()).select_from(Account))
    rows = await db.scalars(
        select(Account).order_by(Account.created_at, Account.id).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def list_keys(
    db: AsyncSession, account_id: str | None, *, limit: int, offset: int
) -> tuple[list[ApiKey], int]:
    query = select(ApiKey)
    if account_id:
        query = query.where(ApiKey.account_id == account_id)
    total = await db.scalar(select(func.count()).select_from(query.subquery()))
    rows = await db.scalars(
        query.order_by(ApiKey.created_at, ApiKey.id).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def revoke_key(db: AsyncSession, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await db.commit()
