"""Signing in to the pages: a token checked as the API checks it, exchanged for a signed session cookie.

The session lives in the cookie itself (who, which role, until when), signed with HMAC-SHA256 under a key
derived from the service's JWT secret, so every worker process reads it with no store and nothing to
share. The secret itself never signs a cookie: a cookie is not a token, and neither can stand in for the
other. A session never outlives the token it came from, nor ``MAX_SESSION_SECONDS``. Signing out removes
the cookie from the browser; like the token it came from, a copied cookie stays valid until it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Final, Literal

import jwt
import msgspec
from litestar.exceptions import NotAuthorizedException

from gateway.auth import MAX_SUB_LENGTH, LedgerToken, Principal, Role

COOKIE_NAME: Final = "ledger_session"
CSRF_COOKIE_NAME: Final = "ledger_csrf"
# A token minted for a year still gives a working day's session at most; signing in again is one paste.
MAX_SESSION_SECONDS: Final = 12 * 3600
MAX_TOKEN_LENGTH: Final = 8 * 1024
_SESSION_LABEL: Final = b"credit-ledger/pages/session-cookie/v1"
_CSRF_LABEL: Final = b"credit-ledger/pages/csrf/v1"
PAGE_ROLES: Final = ("user", "admin")

# Why a token was refused, as the sign-in form says it.
Refusal = Literal["missing", "malformed", "expired", "signature", "claims", "role", "service"]


class Visitor(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Who a session is for. ``expires_at`` is in seconds since the epoch."""

    sub: str
    role: Role
    expires_at: int

    @property
    def principal(self) -> Principal:
        return Principal(sub=self.sub, role=self.role)


class TokenRefusedError(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal)
        self.refusal: Refusal = refusal


def derived_key(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


def csrf_secret(secret: str) -> str:
    return derived_key(secret, _CSRF_LABEL).hex()


def visitor_from_token(encoded: str, secret: str, *, now: float | None = None) -> Visitor:
    """Check a pasted token with the API's rules (HS256; ``sub``, ``role`` and ``exp`` required).

    Service tokens are refused: a service has no page.
    """
    encoded = encoded.strip()
    if not encoded:
        raise TokenRefusedError("missing")
    if len(encoded) > MAX_TOKEN_LENGTH:
        raise TokenRefusedError("malformed")
    try:
        token = LedgerToken.decode(encoded, secret, "HS256", require_claims=["exp", "sub", "role"])
    except NotAuthorizedException as error:
        raise TokenRefusedError(_refusal(error.__cause__)) from None
    role = token.extras.get("role")
    if role == "service":
        raise TokenRefusedError("service")
    if role not in PAGE_ROLES:
        raise TokenRefusedError("role")
    if not 1 <= len(token.sub) <= MAX_SUB_LENGTH:
        raise TokenRefusedError("claims")
    moment = time.time() if now is None else now
    expires_at = min(int(token.exp.timestamp()), int(moment) + MAX_SESSION_SECONDS)
    return Visitor(sub=token.sub, role=role, expires_at=expires_at)


def _refusal(cause: BaseException | None) -> Refusal:
    if isinstance(cause, jwt.ExpiredSignatureError):
        return "expired"
    if isinstance(cause, jwt.InvalidSignatureError):
        return "signature"
    if isinstance(cause, jwt.MissingRequiredClaimError | jwt.ImmatureSignatureError | jwt.InvalidAlgorithmError):
        return "claims"
    if isinstance(cause, jwt.InvalidTokenError) and not isinstance(cause, jwt.DecodeError):
        return "claims"
    return "malformed"


def seal(visitor: Visitor, secret: str) -> str:
    """The cookie's value: the visitor, then its signature, each in URL-safe base64."""
    payload = _b64(msgspec.json.encode(visitor))
    return f"{payload}.{_b64(_sign(payload, secret))}"


def unseal(value: str | None, secret: str, *, now: float | None = None) -> Visitor | None:
    """The visitor a cookie names, or None when it is missing, forged, malformed or expired."""
    if not value or value.count(".") != 1:
        return None
    payload, signature = value.split(".")
    try:
        if not hmac.compare_digest(base64.urlsafe_b64decode(_padded(signature)), _sign(payload, secret)):
            return None
        visitor = msgspec.json.decode(base64.urlsafe_b64decode(_padded(payload)), type=Visitor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    if visitor.expires_at <= (time.time() if now is None else now):
        return None
    return visitor


def _sign(payload: str, secret: str) -> bytes:
    return hmac.new(derived_key(secret, _SESSION_LABEL), payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _padded(text: str) -> bytes:
    return (text + "=" * (-len(text) % 4)).encode()
