"""Bearer JWT authentication (Litestar's JWT support on pyjwt) and role guards.

Litestar checks the signature with the one configured algorithm (so ``alg: none`` and tokens signed
for another algorithm are refused), the expiry, and that ``sub`` is present. Here a token must also
carry ``exp`` and a known ``role``; anything else is a 401 before any handler runs. A valid token with
the wrong role is a 403 from the guard.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, Literal, cast

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from ledger.commands import IdempotencyKey

Role = Literal["user", "admin", "service"]
ROLES: frozenset[str] = frozenset({"user", "admin", "service"})
MAX_SUB_LENGTH = 128


class Principal(msgspec.Struct, frozen=True):
    sub: str
    role: Role

    @property
    def scope(self) -> str:
        """Who the caller is for idempotency and rate limits: a user and a service may share a sub."""
        return f"{self.role}:{self.sub}"

    def idempotency(self, key: str | None) -> IdempotencyKey | None:
        return IdempotencyKey(self.scope, key) if key is not None else None


class LedgerToken(Token):
    """The contract requires ``sub``, ``role`` and ``exp``; ``iat`` is welcome but optional."""

    @classmethod
    def decode_payload(cls, *args: Any, **kwargs: Any) -> Any:
        payload = super().decode_payload(*args, **kwargs)
        if isinstance(payload, dict):
            payload.setdefault("iat", int(time.time()))
        return payload


# Verified tokens, by their exact text: a service sends the same token with thousands of requests, and
# checking its signature again each time was a tenth of a debit's cost. Only the expiry is checked again.
VERIFIED_TOKENS_MAX = 10_000


class BearerMiddleware(JWTAuthenticationMiddleware):
    """Only ``Authorization: Bearer <token>``; Litestar's own takes whatever follows the first space."""

    verified: ClassVar[OrderedDict[tuple[str, str], tuple[AuthenticationResult, float]]] = OrderedDict()

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, encoded = (connection.headers.get(self.auth_header) or "").partition(" ")
        encoded = encoded.strip()
        if scheme.lower() != "bearer" or not encoded:
            raise NotAuthorizedException("a bearer token is required")
        key = (self.token_secret, encoded)
        known = self.verified.get(key)
        if known is not None and known[1] > time.time():
            return known[0]
        result = await self.authenticate_token(encoded_token=encoded, connection=connection)
        if len(self.verified) >= VERIFIED_TOKENS_MAX:
            self.verified.popitem(last=False)
        self.verified[key] = (result, result.auth.exp.timestamp())
        return result


async def _principal(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    role = token.extras.get("role")
    if not isinstance(role, str) or role not in ROLES or not 1 <= len(token.sub) <= MAX_SUB_LENGTH:
        return None  # Litestar answers 401.
    return Principal(sub=token.sub, role=cast("Role", role))


def jwt_auth(secret: str, *, exclude: list[str]) -> JWTAuth[Principal, Token]:
    return JWTAuth[Principal, Token](
        token_secret=secret,
        retrieve_user_handler=_principal,
        token_cls=LedgerToken,
        authentication_middleware_class=BearerMiddleware,
        algorithm="HS256",
        require_claims=["exp", "sub", "role"],
        exclude=exclude,
    )


def requires(
    *roles: Role,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]]:
    # Asynchronous on purpose: Litestar runs a synchronous guard on a worker thread, a hop per request.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.user
        if not isinstance(principal, Principal) or principal.role not in roles:
            raise PermissionDeniedException(f"this needs the role {' or '.join(roles)}")

    return guard
