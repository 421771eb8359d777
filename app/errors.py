"""One error shape for every refusal: `{"code": ..., "message": ..., "details": ...}`."""

from contextlib import suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app.logs import current_call


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class APIError(Exception):
    """Raise from a route to answer `status` with a JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, details: Any | None = None, headers=None
    ):
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, details=details)
        self.headers = headers


CLOSE_CODES = {400: 4400, 401: 4401, 404: 4404, 409: 4409, 422: 4422, 429: 4429, 503: 1013}
"""The WebSocket close code for each HTTP status a refusal can have (1013: try again later)."""


class Refusal(Exception):
    """Raise while opening a WebSocket call to close the socket with `close_code` and a reason."""

    def __init__(self, close_code: int, code: str, message: str):
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message

    @classmethod
    def from_api_error(cls, exc: APIError) -> "Refusal":
        """The same refusal for a WebSocket: its status mapped to a close code."""
        return cls(CLOSE_CODES[exc.status], exc.body.code, exc.body.message)


def not_found(kind: str, ident: str) -> APIError:
    return APIError(404, f"{kind}_not_found", f"{kind} '{ident}' not found")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad request"},
    401: {"model": ErrorBody, "description": "Missing or invalid API key"},
    404: {"model": ErrorBody, "description": "Not found"},
    409: {"model": ErrorBody, "description": "Conflicts with the resource's state"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    422: {"model": ErrorBody, "description": "Invalid input"},
    429: {
        "model": ErrorBody,
        "description": "Rate or concurrent-call limit reached (see Retry-After)",
    },
    500: {
        "model": ErrorBody,
        "description": "Internal error (`internal_error`), logged with its traceback",
    },
}
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Needs the admin key"}
}
DRAINING_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ErrorBody,
        "description": "The server is shutting down (`server_draining`) or full (`server_busy`: "
        "at its calls per worker or load threshold); try again after Retry-After",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        },
        "content": {
            "application/json": {
                "example": {
                    "code": "server_busy",
                    "message": "this server is running its limit of 5 calls; try again shortly",
                    "details": {"limit": 5, "calls": 5, "load": 0.42, "load_threshold": 0.9},
                }
            }
        },
    }
}

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{location}: {error.get('msg')}" if location else str(error.get("msg"))


class InternalErrorMiddleware:
    """Any exception a route or a WebSocket handler lets out: logged with its traceback, the
    route and the session, then a 500 `internal_error` (HTTP), or the socket closed with 1011."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = closed = False

        async def tracking_send(message):
            nonlocal started, closed
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            closed = closed or message["type"] == "websocket.close"
            await send(message)

        reset = current_call.set(None)
        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            call = current_call.get()
            session = (scope.get("path_params") or {}).get("session_id") or (
                call.session_id if call else None
            )
            route = getattr(scope.get("route"), "path", None) or scope["path"]
            method = scope.get("method", "WEBSOCKET")
            logger.exception(
                f"unhandled error in {method} {route} (path {scope['path']}, session {session})"
            )
            await self._answer(scope, send, started, closed)
        finally:
            current_call.reset(reset)

    @staticmethod
    async def _answer(scope, send, started: bool, closed: bool) -> None:
        message = "internal server error; it has been logged"
        if scope["type"] == "websocket":
            if not closed:
                # Before the handshake this refuses the connection; after it, 1011 ends it.
                with suppress(OSError, RuntimeError):  # the peer may be gone already
                    await send({"type": "websocket.close", "code": 1011, "reason": message})
            return
        if started:
            return  # the response is under way: nothing to do but cut it short
        body = ErrorBody(code="internal_error", message=message).model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(InternalErrorMiddleware)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        message = "; ".join(_describe(e) for e in errors) or "invalid request"
        return JSONResponse(
            ErrorBody(code="validation_error", message=message, details=errors).model_dump(),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405 and (allowed := _documented_methods(request)):
            headers = {**(headers or {}), "Allow": allowed}
        return JSONResponse(
            ErrorBody(code=code, message=str(exc.detail)).model_dump(),
            status_code=exc.status_code,
            headers=headers,
        )


def _documented_methods(request: Request) -> str | None:
    """The methods /openapi.json gives the request's path (a literal path before a template
    that also matches it), or None if it documents no such path. Starlette's 405 names only the
    first matching route's, and a resource's GET and PATCH are separate routes."""
    paths = request.app.openapi()["paths"]
    matching = [p for p in paths if compile_path(p)[0].match(request.url.path)]
    if not matching:
        return None
    path = min(matching, key=lambda p: p.count("{"))
    return ", ".join(sorted(method.upper() for method in paths[path]))
