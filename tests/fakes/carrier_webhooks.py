"""Carrier webhooks signed as Twilio, Telnyx and Plivo sign them.

Each signer follows its carrier's documentation (Twilio's own SDK computes its signature;
Telnyx and Plivo are written out here from their docs and SDKs, independently of the server's
checks in `app/telephony/signatures.py`).
"""

import base64
import hashlib
import hmac
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twilio.request_validator import RequestValidator


def twilio_post(url: str, form: dict[str, str], auth_token: str) -> httpx.Response:
    """POST `form` to `url` with `X-Twilio-Signature` (HMAC-SHA1 of the URL and sorted form)."""
    signature = RequestValidator(auth_token).compute_signature(url, form)
    return httpx.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=30)


class TelnyxSigner:
    """A Telnyx account's Ed25519 webhook key pair; `public_key` is what the server is given."""

    def __init__(self):
        self._private = Ed25519PrivateKey.generate()
        raw = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        timestamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._private.sign(timestamp.encode() + b"|" + body)
        return {
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": timestamp,
        }

    def post(self, url: str, form: dict[str, str], timestamp: int | None = None) -> httpx.Response:
        body = urlencode(form).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **self.headers(body, timestamp),
        }
        return httpx.post(url, content=body, headers=headers, timeout=30)


def plivo_v3_signature(url: str, form: dict[str, str], nonce: str, auth_token: str) -> str:
    """Plivo's V3 signature of a POST: base64 HMAC-SHA256 over
    `{scheme://host/path}?{sorted query k=v&…}.{sorted form kv…}.{nonce}` (the `?` alone without a
    query, no `.` between them without one)."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query, keep_blank_values=True)
    base = urlunparse((parsed.scheme, parsed.netloc, parsed.path, "", "", ""))
    query_string = "&".join(f"{k}={v}" for k in sorted(query) for v in sorted(query[k]))
    signed = base
    if query_string or form:
        signed += "?" + query_string
    if query_string and form:
        signed += "."
    signed += "".join(f"{k}{form[k]}" for k in sorted(form))
    digest = hmac.new(auth_token.encode(), f"{signed}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def plivo_post(url: str, form: dict[str, str], auth_token: str) -> httpx.Response:
    nonce = uuid.uuid4().hex
    headers = {
        "X-Plivo-Signature-V3": plivo_v3_signature(url, form, nonce, auth_token),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }
    return httpx.post(url, data=form, headers=headers, timeout=30)
