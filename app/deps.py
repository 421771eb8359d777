"""Injected dependencies: shared state, a database session, the caller's account
(an `X-API-Key`, or the dashboard's log-in cookie)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import APIError
from app.state import AppState
from app.storage import accounts
from app.storage import dashboard as dashboard_store

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Your Switchboard API key"
)
LOGIN_COOKIE = "switchboard_session"
"""The dashboard log-in cookie: a random session id (see `app.storage.dashboard`), never the key."""


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


async def _within_rate(state: AppState, caller: Caller) -> Caller:
    retry_after = await state.rate_limiter.retry_after(caller.key_id)
    if retry_after is not None:
        raise APIError(
            429,
            "rate_limited",
            f"too many requests for this key; retry in {retry_after}s",
            {"limit_per_minute": state.rate_limiter.per_minute},
            headers={"Retry-After": str(retry_after)},
        )
    return caller


async def require_caller(
    state: Annotated[AppState, Depends(get_state)],
    db: Annotated[AsyncSession, Depends(get_db)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Caller:
    caller = await authenticate(db, api_key)
    if caller is None:
        message = "missing X-API-Key header" if not api_key else "invalid API key"
        raise APIError(401, "unauthorized", message)
    return await _within_rate(state, caller)


def same_origin(request: Request) -> bool:
    """False for a browser request sent from another site's page."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


async def login_caller(request: Request, state: AppState, db: AsyncSession) -> Caller:
    """The caller the dashboard's log-in cookie names (with the API's rate limit); 401 without a
    live log-in, 403 for a state-changing request from another origin."""
    if request.method not in ("GET", "HEAD") and not same_origin(request):
        raise APIError(
            403, "cross_origin", "requests from another origin may not use the dashboard log-in"
        )
    session_id = request.cookies.get(LOGIN_COOKIE)
    key = await dashboard_store.login_key(db, session_id) if session_id else None
    if key is None:
        raise APIError(401, "unauthorized", "log in to the dashboard with an API key first")
    await accounts.touch_key(db, key)
    return await _within_rate(
        state, Caller(account_id=key.account_id, key_id=key.id, is_admin=key.is_admin)
    )


async def key_or_login_caller(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    db: Annotated[AsyncSession, Depends(get_db)],
    api_key: Annotated[str | None, Depends(api_key_header)],
) -> Caller:
    """For API routes the dashboard's pages call: an `X-API-Key` header, else the log-in cookie."""
    if api_key or LOGIN_COOKIE not in request.cookies:
        return await require_caller(state, db, api_key)
    return await login_caller(request, state, db)


async def require_admin(caller: Annotated[Caller, Depends(require_caller)]) -> Caller:
    if not caller.is_admin:
        raise APIError(403, "forbidden", "this route needs the admin key")
    return caller


StateDep = Annotated[AppState, Depends(get_state)]
DbDep = Annotated[AsyncSession, Depends(get_db)]
CallerDep = Annotated[Caller, Depends(require_caller)]
AdminDep = Annotated[Caller, Depends(require_admin)]
KeyOrLoginCallerDep = Annotated[Caller, Depends(key_or_login_caller)]
