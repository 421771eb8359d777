"""Identifier and time helpers shared by the storage layer."""

import secrets
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    """A random, URL-safe identifier such as `agt_3kF9...`."""
    return f"{prefix}_{secrets.token_urlsafe(12).replace('-', 'x').replace('_', 'z')}"


def utcnow() -> datetime:
    return datetime.now(UTC)
