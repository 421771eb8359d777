"""Log hygiene: secrets that ride in URLs (`?api_key=`, `?token=`, …) never reach a log line.

Clients may still put a key or token in a WebSocket URL's query (the older form), and
uvicorn's access log prints the whole path. `redact` masks those values; it is installed
on uvicorn's log handlers (`UVICORN_LOG_CONFIG`, used by `switchboard serve`) and as a
loguru patcher (`install_log_redaction`, at start) for the server's own messages, whose
tracebacks leave out local variables' values.
"""

import copy
import logging
import re
import sys

from loguru import logger
from uvicorn.config import LOGGING_CONFIG

SECRET_QUERY = re.compile(
    r"(?i)((?:[?&;]|%3F|%26)(?:api[_-]?key|key|token|ticket|secret|password|access[_-]?token|signature)(?:=|%3D))"
    r"[^&;\s\"'<>]*"
)


def redact(text: str) -> str:
    """`text` with every secret query value replaced by `[redacted]`."""
    return SECRET_QUERY.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """A logging filter that redacts a record's message and its string arguments (uvicorn's
    access formatter reads the arguments themselves, so they keep their places)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def _uvicorn_log_config() -> dict:
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_secrets": {"()": RedactSecrets}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_secrets"]
    return config


UVICORN_LOG_CONFIG = _uvicorn_log_config()
"""uvicorn's default logging, every handler (access log included) behind `RedactSecrets`."""


def install_log_redaction() -> None:
    """Redact every loguru message of this process, and print tracebacks without the values of
    local variables (loguru's default shows them, and they can hold keys, tokens and secrets)."""
    logger.remove()
    logger.add(sys.stderr, diagnose=False)
    logger.configure(patcher=lambda record: record.update({"message": redact(record["message"])}))
