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
    if not secret:
        return None
    key = await accounts.find_key(db, secret)
    if key is None:
        return None
    return Caller(account_id=key.account_id, key_id=key.id, is_admin=key.is_admin)


async def require_caller(
    db: Annotated[AsyncSession, Depends(get_db)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Caller:
    caller = await authenticate(db, api_key)
    if caller is None:
        message = "missing X-API-Key header" if not api_key else "invalid API key"
        raise APIError(401, "unauthorized", message)
    return caller


StateDep = Annotated[AppState, Depends(get_state)]
DbDep = Annotated[AsyncSession, Depends(get_db)]
CallerDep = Annotated[Caller, Depends(require_caller)]
