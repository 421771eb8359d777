"""This server's address as clients and carriers reach it."""

from fastapi import Request

from app.settings import Settings


def public_base_url(settings: Settings, request: Request) -> str:
    """`http(s)://host` with no trailing slash: `SWITCHBOARD_PUBLIC_BASE_URL` (behind a tunnel
    or proxy), else the address the request came to."""
    return (settings.public_base_url or str(request.base_url)).rstrip("/")


def websocket_base(settings: Settings, request: Request) -> str:
    """`ws(s)://host` of this server as clients reach it."""
    base = public_base_url(settings, request)
    return "ws" + base.removeprefix("http") if base.startswith("http") else base


def own_base_url(settings: Settings) -> str:
    """This server's address for work done outside a request (a campaign placing a call, whose
    callbacks come back here): `SWITCHBOARD_PUBLIC_BASE_URL`, else the host and port it listens on."""
    return (settings.public_base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
