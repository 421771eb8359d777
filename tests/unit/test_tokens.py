"""Join tokens (app/calls/tokens.py): what a signed token carries, and every way one is refused.

(tests/test_security_sessions.py covers malformed shapes and a plain rotation.)"""

import base64
import hashlib
import hmac
import json
import time

import pytest

from app.calls import tokens
from app.calls.tokens import MAX_TOKEN_CHARS, TokenError, TokenSigner

pytestmark = pytest.mark.storage_free


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(secret: str, payload: dict) -> str:
    """A token as the server's signer would make it, but with any payload at all."""
    body = b64(json.dumps(payload).encode())
    return f"{body}.{b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())}"


def test_claims_come_back_with_kind_and_whole_second_expiry():
    signer = TokenSigner("s1")
    token = signer.issue("relay", {"sid": "ses_1", "n": 3}, 2_000_000_000.9)
    assert signer.verify(token, "relay") == {
        "sid": "ses_1",
        "n": 3,
        "kind": "relay",
        "exp": 2_000_000_000,
    }


def test_claims_cannot_override_the_kind_or_the_expiry():
    signer = TokenSigner("s1")
    token = signer.issue("session", {"kind": "relay", "exp": 4_000_000_000}, time.time() - 1)
    with pytest.raises(TokenError, match="wrong token kind"):
        signer.verify(token, "relay")
    with pytest.raises(TokenError, match="token expired"):
        signer.verify(token, "session")


def test_expiry_is_inclusive_of_its_second(monkeypatch):
    signer = TokenSigner("s1")
    token = signer.issue("session", {}, 1_000)
    monkeypatch.setattr(tokens.time, "time", lambda: 1_000.0)
    assert signer.verify(token, "session")["exp"] == 1_000
    monkeypatch.setattr(tokens.time, "time", lambda: 1_000.001)
    with pytest.raises(TokenError, match="token expired"):
        signer.verify(token, "session")


def test_a_tampered_payload_fails_the_signature():
    signer = TokenSigner("s1")
    payload, signature = signer.issue("session", {"sid": "ses_1"}, time.time() + 60).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = b64(json.dumps({**claims, "sid": "ses_2"}, separators=(",", ":")).encode())
    with pytest.raises(TokenError, match="bad token signature"):
        signer.verify(f"{forged}.{signature}", "session")


def test_rotation_through_several_secrets():
    """Tokens of every listed secret verify; a secret dropped from the list stops verifying."""
    oldest, old, current = "secret-1", "secret-2", "secret-3"
    tokens_by_secret = {
        secret: TokenSigner(secret).issue("session", {"by": secret}, time.time() + 60)
        for secret in (oldest, old, current)
    }
    rotated = TokenSigner(current, [old, oldest])
    for secret, token in tokens_by_secret.items():
        assert rotated.verify(token, "session")["by"] == secret
    # New tokens are always signed with the current secret, whatever the previous ones.
    fresh = rotated.issue("session", {}, time.time() + 60)
    assert TokenSigner(current).verify(fresh, "session")["kind"] == "session"
    with pytest.raises(TokenError, match="bad token signature"):
        TokenSigner(old, [oldest]).verify(fresh, "session")
    dropped = TokenSigner(current, [old])
    with pytest.raises(TokenError, match="bad token signature"):
        dropped.verify(tokens_by_secret[oldest], "session")


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"kind": "session", "exp": "2100-01-01"}, "token expired"),  # not an int
        ({"kind": "session", "exp": 4.1e9}, "token expired"),  # a float is not an int either
        ({"kind": "session"}, "token expired"),  # no expiry at all
        ({"exp": 4_000_000_000}, "wrong token kind"),
        ([1, 2], "wrong token kind"),
        ("session", "wrong token kind"),
    ],
)
def test_a_correctly_signed_but_ill_formed_payload_is_refused(payload, message):
    with pytest.raises(TokenError, match=message):
        TokenSigner("s1").verify(signed("s1", payload), "session")


def test_signed_bytes_that_are_not_json_are_malformed():
    body = b64(b"\xff\xfenot json")
    signature = b64(hmac.new(b"s1", body.encode(), hashlib.sha256).digest())
    with pytest.raises(TokenError, match="malformed token"):
        TokenSigner("s1").verify(f"{body}.{signature}", "session")


def test_length_limit_is_checked_before_anything_else():
    signer = TokenSigner("s1")
    at_limit = "a" * (MAX_TOKEN_CHARS - 44) + "." + "b" * 43
    assert len(at_limit) == MAX_TOKEN_CHARS
    with pytest.raises(TokenError, match="bad token signature"):  # well-shaped, so it got that far
        signer.verify(at_limit, "session")
    with pytest.raises(TokenError, match="malformed token"):
        signer.verify(at_limit + "b", "session")
    with pytest.raises(TokenError, match="malformed token"):
        signer.verify(None, "session")  # type: ignore[arg-type]
