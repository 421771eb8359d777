"""Short-lived signed tokens (HMAC-SHA256) that let a client or carrier join a session.

A token is `<payload>.<signature>`, both unpadded URL-safe base64. Tokens are signed with
the current secret and verified with it or any previous one, so the secret can be rotated
without cutting off tokens already handed out.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from typing import Any

MAX_TOKEN_CHARS = 4096
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class TokenError(ValueError):
    """The token is malformed, forged, of the wrong kind or expired; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Signs with `secret`; verifies with `secret` or any of `previous` (oldest last)."""

    def __init__(self, secret: str, previous: Sequence[str] = ()):
        self._keys = [key.encode() for key in (secret, *previous)]

    @staticmethod
    def _sign(key: bytes, payload: str) -> bytes:
        return hmac.new(key, payload.encode(), hashlib.sha256).digest()

    def issue(self, kind: str, claims: dict[str, Any], expires_at: float) -> str:
        payload = _b64(
            json.dumps(
                {**claims, "kind": kind, "exp": int(expires_at)}, separators=(",", ":")
            ).encode()
        )
        return f"{payload}.{_b64(self._sign(self._keys[0], payload))}"

    def verify(self, token: str, kind: str) -> dict[str, Any]:
        if (
            not isinstance(token, str)
            or len(token) > MAX_TOKEN_CHARS
            or not _SHAPE.fullmatch(token)
        ):
            raise TokenError("malformed token")
        payload, signature = token.split(".")
        try:
            signature_bytes = _unb64(signature)
        except (binascii.Error, ValueError):
            raise TokenError("malformed token") from None
        if not any(
            hmac.compare_digest(signature_bytes, self._sign(key, payload)) for key in self._keys
        ):
            raise TokenError("bad token signature")
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            raise TokenError("malformed token") from None
        if not isinstance(claims, dict) or claims.get("kind") != kind:
            raise TokenError("wrong token kind")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            raise TokenError("token expired")
        return claims
