"""One error shape for every refusal: `{"code": ..., "message": ..., "details": ...}`."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class APIError(Exception):
    """Raise from a route to answer `status` with a JSON error body."""

    def __init__(self, status: int, code: str, message: str, details: Any | None = None, headers=None):
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, details=details)
        self.headers = headers


def not_found(kind: str, ident: str) -> APIError:
    return APIError(404, f"{kind}_not_found", f"{kind} '{ident}' not found")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad request"},
    401: {"model": ErrorBody, "description": "Missing or invalid API key"},
    404: {"model": ErrorBody, "description": "Not found"},
    409: {"model": ErrorBody, "description": "Conflicts with the resource's state"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    422: {"model": ErrorBody, "description": "Invalid input"},
    429: {"model": ErrorBody, "description": "Rate or concurrent-call limit reached (see Retry-After)"},
}
ADMIN_RESPONSES = {403: {"model": ErrorBody, "description": "Needs the admin key"}}
DRAINING_RESPONSES = {503: {"model": ErrorBody, "description": "The server is shutting down (see Retry-After)"}}

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
                 503: "unavailable"}


def _describe(error: dict) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{location}: {error.get('msg')}" if location else str(error.get("msg"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        message = "; ".join(_describe(e) for e in errors) or "invalid request"
        return JSONResponse(
            ErrorBody(code="validation_error", message=message, details=errors).model_dump(),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(
            ErrorBody(code=code, message=str(exc.detail)).model_dump(),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
