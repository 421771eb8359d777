"""Injected dependencies: shared state, a database session, the caller's account."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import APIError
from app.state import AppState
from app.storage import accounts

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Your Switchboard API key")


def get_state(request: Request) -> AppState:
    return request.app.state.switchboard


async def get_db(state: Annotated[AppState, Depends(get_state)]) -> AsyncIterator[AsyncSession]:
    async with state.db.sessions() as db:
        yield db


@dataclass
class Caller:
    """Who is calling: the account every query is scoped to."""

    account_id: str
    key_id: str
    is_admin: bool


async def authenticate(db: AsyncSession, secret: str | None) -> Caller | None:
    """The caller a key belongs to, or None for a missing, unknown or revoked key."""
    if not secret:
        return None
    key = await accounts.find_key(db, secret)
    if key is None:
        return None
    await accounts.touch_key(db, key)
    return Caller(account_id=key.account_id, key_id=key.id, is_admin=key.is_admin)


async def require_caller(
    state: Annotated[AppState, Depends(get_state)],
    db: Annotated[AsyncSession, Depends(get_db)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Caller:
    caller = await authenticate(db, api_key)
    if caller is None:
        message = "missing X-API-Key header" if not api_key else "invalid API key"
        raise APIError(401, "unauthorized", message)
    retry_after = await state.rate_limiter.retry_after(caller.key_id)
    if retry_after is not None:
        raise APIError(
            429, "rate_limited", f"too many requests for this key; retry in {retry_after}s",
            {"limit_per_minute": state.rate_limiter.per_minute}, headers={"Retry-After": str(retry_after)},
        )
    return caller


async def require_admin(caller: Annotated[Caller, Depends(require_caller)]) -> Caller:
    if not caller.is_admin:
        raise APIError(403, "forbidden", "this route needs the admin key")
    return caller


StateDep = Annotated[AppState, Depends(get_state)]
DbDep = Annotated[AsyncSession, Depends(get_db)]
CallerDep = Annotated[Caller, Depends(require_caller)]
AdminDep = Annotated[Caller, Depends(require_admin)]
