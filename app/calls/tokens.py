"""Short-lived signed tokens (HMAC-SHA256) that let a client or carrier join a session."""

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class TokenError(ValueError):
    """The token is malformed, forged, of the wrong kind or expired; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, secret: str):
        self._key = secret.encode()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, kind: str, claims: dict[str, Any], expires_at: float) -> str:
        payload = _b64(json.dumps({**claims, "kind": kind, "exp": int(expires_at)}, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, kind: str) -> dict[str, Any]:
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            raise TokenError("malformed token")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise TokenError("bad token signature")
        try:
            claims = json.loads(_unb64(payload))
        except ValueError:
            raise TokenError("malformed token") from None
        if not isinstance(claims, dict) or claims.get("kind") != kind:
            raise TokenError("wrong token kind")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            raise TokenError("token expired")
        return claims
