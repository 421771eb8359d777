"""Logging: one loguru sink per process, every line in one format, tagged with its call.

- `configure_logging` (at start, in every process) routes the standard library's logging (uvicorn's
  access and error logs, SQLAlchemy, httpx, ...) into loguru, and writes one text line, or one JSON
  object (`SWITCHBOARD_LOG_FORMAT=json`), per record to stderr at `SWITCHBOARD_LOG_LEVEL`.
- A line written while a call is being handled carries its `session_id`, `agent_id` and
  `account_id` (`bind_call`, set when the call is admitted or opened; asyncio tasks inherit it, so
  Pipecat's own lines for the call carry them too).
- Secrets riding in URLs (`?api_key=`, `?token=`, ...) are masked in every message, and tracebacks
  leave out local variables' values (they can hold keys, tokens and secrets). Caller audio is never
  logged; what callers and agents say only at DEBUG (Pipecat's own transcript lines are DEBUG).
"""

import inspect
import json
import logging
import logging.config
import re
import sys
import traceback
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Literal

from loguru import logger
from opentelemetry import trace

SECRET_QUERY = re.compile(
    r"(?i)((?:[?&;]|%3F|%26)(?:api[_-]?key|key|token|ticket|secret|password|access[_-]?token|signature)(?:=|%3D))"
    r"[^&;\s\"'<>]*"
)

TEXT_FORMAT = (
    "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} | "
    "{extra[call_tag]}{message}"
)


def redact(text: str) -> str:
    """`text` with every secret query value replaced by `[redacted]`."""
    return SECRET_QUERY.sub(r"\1[redacted]", text)


@dataclass(frozen=True)
class CallIds:
    session_id: str
    agent_id: str | None = None
    account_id: str | None = None


current_call: ContextVar[CallIds | None] = ContextVar("current_call", default=None)
"""The call the running request or task is about (set when it is admitted or opened)."""


def bind_call(session_id: str, agent_id: str | None = None, account_id: str | None = None) -> None:
    """Tag this request's or task's log lines (and those of the tasks it starts) with the call's
    ids, and put them on the current trace span (`session.id`, `agent.id`, `account.id`)."""
    ids = CallIds(session_id, agent_id, account_id)
    current_call.set(ids)
    span = trace.get_current_span()
    for key, value in asdict(ids).items():
        if value:
            span.set_attribute(key.replace("_id", ".id"), value)


def _patch(record) -> None:
    record["message"] = redact(record["message"])
    ids = current_call.get()
    record["extra"].update(asdict(ids) if ids else {})
    record["extra"]["call_tag"] = f"[{ids.session_id}] " if ids else ""


def _json_sink(message) -> None:
    record = message.record
    line = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
        **{k: v for k, v in record["extra"].items() if k != "call_tag"},
    }
    if record["exception"]:
        kind, value, tb = record["exception"]
        line["exception"] = redact("".join(traceback.format_exception(kind, value, tb)))
    sys.stderr.write(json.dumps(line, default=str) + "\n")


class InterceptHandler(logging.Handler):
    """Hands a standard-library log record to loguru (the recipe from loguru's documentation)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: FrameType | None = inspect.currentframe()
        depth = 0
        while frame and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame, depth = frame.f_back, depth + 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


UVICORN_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"loguru": {"class": "app.logs.InterceptHandler"}},
    "loggers": {
        "uvicorn": {"handlers": ["loguru"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["loguru"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["loguru"], "level": "WARNING"},
}
"""uvicorn's logging (applied by uvicorn in every worker process): its loggers, and every other
standard-library logger at WARNING, handed to loguru."""


def configure_logging(level: str = "INFO", log_format: Literal["text", "json"] = "text") -> None:
    """Make this process's one log sink, and route the standard library's logging to it."""
    logger.remove()
    logger.configure(patcher=_patch, extra={"call_tag": ""})
    if log_format == "json":
        logger.add(_json_sink, level=level.upper(), diagnose=False, backtrace=False)
    else:
        logger.add(sys.stderr, level=level.upper(), format=TEXT_FORMAT, diagnose=False)
    logging.config.dictConfig(UVICORN_LOG_CONFIG)
