"""Accounts and API keys, managed with the admin key."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AdminDep, DbDep
from app.errors import ADMIN_RESPONSES, ERROR_RESPONSES, not_found
from app.request_body import REQUEST_BODY, WHOLE_NUMBER, left_out_unchanged
from app.storage import accounts as account_store
from app.storage.models import Account, ApiKey

router = APIRouter(tags=["accounts"], responses={**ERROR_RESPONSES, **ADMIN_RESPONSES})

CallCap = Annotated[
    int | None,
    Field(default=None, ge=1, le=10_000, description="Live-call cap; the server default if null"),
    WHOLE_NUMBER,
]
RecordingQuota = Annotated[
    int | None,
    Field(
        default=None,
        ge=0,
        le=1 << 50,
        description="Recording storage cap in bytes; the server default if null",
    ),
    WHOLE_NUMBER,
]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


class AccountCreate(BaseModel):
    model_config = REQUEST_BODY

    name: str = Field(min_length=1, max_length=200)
    max_concurrent_calls: CallCap = None
    recording_quota_bytes: RecordingQuota = None


class AccountUpdate(BaseModel):
    model_config = REQUEST_BODY

    name: str = left_out_unchanged(min_length=1, max_length=200)
    max_concurrent_calls: CallCap = None
    recording_quota_bytes: RecordingQuota = None


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    max_concurrent_calls: int | None
    recording_quota_bytes: int | None
    created_at: datetime


class AccountList(BaseModel):
    items: list[AccountOut]
    total: int
    limit: int
    offset: int


class ApiKeyCreate(BaseModel):
    model_config = REQUEST_BODY

    account_id: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=200)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    name: str
    prefix: str = Field(description="The secret's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="The key itself. Shown only in this response; store it now.")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]
    total: int
    limit: int
    offset: int


async def load_account(db, account_id: str) -> Account:
    account = await db.get(Account, account_id)
    if account is None:
        raise not_found("account", account_id)
    return account


@router.post(
    "/v1/accounts", status_code=201, response_model=AccountOut, summary="Create an account"
)
async def create_account(body: AccountCreate, db: DbDep, admin: AdminDep) -> Account:
    return await account_store.create_account(
        db, body.name, body.max_concurrent_calls, body.recording_quota_bytes
    )


@router.get("/v1/accounts", response_model=AccountList, summary="List accounts")
async def list_accounts(db: DbDep, admin: AdminDep, limit: Limit = 20, offset: Offset = 0) -> dict:
    items, total = await account_store.list_accounts(db, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/v1/accounts/{account_id}", response_model=AccountOut, summary="Get an account")
async def get_account(account_id: str, db: DbDep, admin: AdminDep) -> Account:
    return await load_account(db, account_id)


@router.patch("/v1/accounts/{account_id}", response_model=AccountOut, summary="Update an account")
async def update_account(
    account_id: str, body: AccountUpdate, db: DbDep, admin: AdminDep
) -> Account:
    account = await load_account(db, account_id)
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        setattr(account, field, value)
    await db.commit()
    return account


@router.post(
    "/v1/api-keys", status_code=201, response_model=ApiKeyCreated, summary="Create an API key"
)
async def create_key(body: ApiKeyCreate, db: DbDep, admin: AdminDep) -> dict:
    await load_account(db, body.account_id)
    secret = account_store.generate_key()
    key = await account_store.add_key(db, body.account_id, body.name, secret)
    return {**ApiKeyOut.model_validate(key).model_dump(), "secret": secret}


@router.get(
    "/v1/api-keys", response_model=ApiKeyList, summary="List API keys (never their secrets)"
)
async def list_keys(
    db: DbDep, admin: AdminDep, account_id: str | None = None, limit: Limit = 20, offset: Offset = 0
) -> dict:
    items, total = await account_store.list_keys(db, account_id, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.delete(
    "/v1/api-keys/{key_id}", response_model=ApiKeyOut, summary="Revoke an API key at once"
)
async def revoke_key(key_id: str, db: DbDep, admin: AdminDep) -> ApiKey:
    key = await db.get(ApiKey, key_id)
    if key is None:
        raise not_found("api_key", key_id)
    await account_store.revoke_key(db, key)
    return key
