"""Carrier webhook signatures: Twilio, Telnyx and Plivo sign every webhook; unsigned ones are refused.

Checks are on by default. Without the carrier's signing credential configured the webhook
routes answer 403 saying what to set, unless the operator turns on
`SWITCHBOARD_INSECURE_UNSIGNED_CARRIER_WEBHOOKS` (development only, logged loudly at start).

- Twilio: `X-Twilio-Signature`, HMAC-SHA1 of the URL and the sorted form (Twilio's SDK checks it).
- Telnyx: `telnyx-signature-ed25519`, an Ed25519 signature of `{telnyx-timestamp}|{raw body}` by
  the account's key (`TELNYX_PUBLIC_KEY`); the timestamp must be within 5 minutes.
- Plivo: `X-Plivo-Signature-V3`, base64 HMAC-SHA256(auth token, `{url}.{nonce}`) where the URL
  carries its sorted query and then the sorted form fields (`X-Plivo-Signature-V3-Nonce`);
  the header may list several signatures, one per active auth token.
"""

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Request
from loguru import logger
from twilio.request_validator import RequestValidator

from app.errors import APIError, ErrorBody
from app.settings import Settings

TELNYX_TIMESTAMP_TOLERANCE_SECS = 300
INSECURE_SETTING = "SWITCHBOARD_INSECURE_UNSIGNED_CARRIER_WEBHOOKS"
CREDENTIALS = {
    "twilio": "TWILIO_AUTH_TOKEN",
    "telnyx": "TELNYX_PUBLIC_KEY",
    "plivo": "PLIVO_AUTH_TOKEN",
}
SIGNED_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {
        "model": ErrorBody,
        "description": "Missing or invalid carrier signature, or none configured",
    }
}


def webhook_url(settings: Settings, request: Request) -> str:
    """The URL the carrier requested, as it saw it (behind a tunnel or proxy: the public base URL)."""
    if not settings.public_base_url:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{settings.public_base_url.rstrip('/')}{request.url.path}{query}"


def warn_if_insecure(settings: Settings) -> None:
    """Say loudly at start that unsigned carrier webhooks are accepted."""
    if settings.insecure_unsigned_carrier_webhooks:
        logger.warning(
            f"INSECURE: {INSECURE_SETTING} is on: carrier webhooks without a configured signing credential are "
            "accepted unsigned, so anyone can start calls on your agents' numbers. Development only."
        )


def _configured(settings: Settings, carrier: str, credential: str | None, request: Request) -> bool:
    """Whether to check this carrier's signatures; 403 if it can't and unsigned ones aren't allowed."""
    if credential:
        return True
    if settings.insecure_unsigned_carrier_webhooks:
        logger.warning(
            f"accepting an unsigned {carrier.capitalize()} webhook {request.url.path} ({INSECURE_SETTING} is on)"
        )
        return False
    logger.warning(
        f"refused {carrier.capitalize()} webhook {request.url.path}: {CREDENTIALS[carrier]} is not set"
    )
    raise APIError(
        403,
        "webhook_signing_not_configured",
        f"{carrier.capitalize()} webhooks are refused until the server can check their signatures: set {CREDENTIALS[carrier]} "
        f"(or, for local development only, {INSECURE_SETTING}=true)",
        {"carrier": carrier, "setting": CREDENTIALS[carrier]},
    )


def _refuse(carrier: str, request: Request, header: str, reason: str) -> APIError:
    logger.warning(f"refused {carrier.capitalize()} webhook {request.url.path}: {reason} {header}")
    return APIError(403, "invalid_signature", f"{reason} {header}")


def check_twilio(settings: Settings, request: Request, form: dict[str, str]) -> None:
    """403 unless `X-Twilio-Signature` signs this request."""
    if not _configured(settings, "twilio", settings.twilio_auth_token, request):
        return
    signature = request.headers.get("x-twilio-signature")
    url = webhook_url(settings, request)
    if not signature or not RequestValidator(settings.twilio_auth_token).validate(
        url, form, signature
    ):
        raise _refuse(
            "twilio", request, "X-Twilio-Signature", "missing" if not signature else "invalid"
        )


def check_telnyx(settings: Settings, request: Request, body: bytes) -> None:
    """403 unless `telnyx-signature-ed25519` signs `{telnyx-timestamp}|{body}` with the account's key,
    the timestamp being recent."""
    if not _configured(settings, "telnyx", settings.telnyx_public_key, request):
        return
    signature, timestamp = (
        request.headers.get("telnyx-signature-ed25519"),
        request.headers.get("telnyx-timestamp"),
    )
    if not signature or not timestamp:
        raise _refuse("telnyx", request, "telnyx-signature-ed25519 / telnyx-timestamp", "missing")
    if (
        not timestamp.isdigit()
        or abs(time.time() - int(timestamp)) > TELNYX_TIMESTAMP_TOLERANCE_SECS
    ):
        raise _refuse("telnyx", request, "telnyx-timestamp", "stale or invalid")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(settings.telnyx_public_key or ""))
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + b"|" + body)
    except (InvalidSignature, ValueError, binascii.Error):
        raise _refuse("telnyx", request, "telnyx-signature-ed25519", "invalid") from None


def plivo_signature(auth_token: str, url: str, form: dict[str, list[str]], nonce: str) -> str:
    """Plivo's V3 signature of a POST to `url` with `form`, as Plivo's SDK computes it."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    signed = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    sorted_query = "&".join(
        f"{key}={value}" for key in sorted(query) for value in sorted(query[key])
    )
    if sorted_query or form:
        signed += f"?{sorted_query}"
    if sorted_query and form:
        signed += "."
    signed += "".join(f"{key}{value}" for key in sorted(form) for value in sorted(form[key]))
    # The SDK reads the UTF-8 bytes back one character per byte before signing them.
    message = f"{signed.encode().decode('latin-1')}.{nonce.encode().decode('latin-1')}".encode()
    return base64.b64encode(
        hmac.new(auth_token.encode(), message, hashlib.sha256).digest()
    ).decode()


def check_plivo(settings: Settings, request: Request, form: dict[str, list[str]]) -> None:
    """403 unless one of `X-Plivo-Signature-V3`'s signatures signs this request with its nonce."""
    if not _configured(settings, "plivo", settings.plivo_auth_token, request):
        return
    signatures, nonce = (
        request.headers.get("x-plivo-signature-v3"),
        request.headers.get("x-plivo-signature-v3-nonce"),
    )
    if not signatures or not nonce:
        raise _refuse(
            "plivo", request, "X-Plivo-Signature-V3 / X-Plivo-Signature-V3-Nonce", "missing"
        )
    expected = plivo_signature(
        settings.plivo_auth_token or "", webhook_url(settings, request), form, nonce
    )
    if not any(
        hmac.compare_digest(expected.encode(), given.strip().encode())
        for given in signatures.split(",")
    ):
        raise _refuse("plivo", request, "X-Plivo-Signature-V3", "invalid")
