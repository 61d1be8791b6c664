"""Bearer JWT authentication (Litestar's JWT support on pyjwt) and role guards.

Litestar checks the signature with the one configured algorithm (so ``alg: none`` and tokens signed
for another algorithm are refused), the expiry, and that ``sub`` is present. Here a token must also
carry ``exp`` and a known ``role``; anything else is a 401 before any handler runs. A valid token with
the wrong role is a 403, also from the middleware: each controller names its roles in its ``opt``
(``opt = requires("admin")``). Litestar's guards would do the same, but Litestar copies the route
handler for every guard call, which was 4% of a debit's CPU in the benchmark's profile.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, ClassVar, Literal, cast

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AuthenticationResult
from litestar.middleware._utils import should_bypass_middleware
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token
from litestar.types import Receive, Scope, Send

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not should_bypass_middleware(
            exclude_http_methods=self.exclude_http_methods,
            exclude_opt_key=self.exclude_opt_key,
            exclude_path_pattern=self.exclude,
            scope=scope,
            scopes=self.scopes,
        ):
            # A token verified before needs only the header: no connection object is built for it.
            result = self._known(_bearer(_header(scope, self.auth_header)))
            if result is None:
                result = await self.authenticate_request(ASGIConnection(scope))
            scope["user"] = result.user
            scope["auth"] = result.auth
            _check_role(scope, result.user)
        await self.app(scope, receive, send)

    def _known(self, encoded: str) -> AuthenticationResult | None:
        known = self.verified.get((self.token_secret, encoded))
        if known is not None and known[1] > time.time():
            return known[0]
        return None

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        encoded = _bearer(connection.headers.get(self.auth_header) or "")
        known = self._known(encoded)
        if known is not None:
            return known
        result = await self.authenticate_token(encoded_token=encoded, connection=connection)
        if len(self.verified) >= VERIFIED_TOKENS_MAX:
            self.verified.popitem(last=False)
        self.verified[(self.token_secret, encoded)] = (result, result.auth.exp.timestamp())
        return result


def _header(scope: Scope, name: str) -> str:
    wanted = name.lower().encode("latin-1")
    for key, value in scope["headers"]:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return ""


def _bearer(header: str) -> str:
    scheme, _, encoded = header.partition(" ")
    encoded = encoded.strip()
    if scheme.lower() != "bearer" or not encoded:
        raise NotAuthorizedException("a bearer token is required")
    return encoded


def _check_role(scope: Scope, principal: Any) -> None:
    handler = scope.get("route_handler")
    roles: tuple[Role, ...] | None = handler.opt.get(ROLES_OPT) if handler is not None else None
    if roles is not None and (not isinstance(principal, Principal) or principal.role not in roles):
        raise PermissionDeniedException(f"this needs the role {' or '.join(roles)}")


async def _principal(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    role = token.extras.get("role")
    if not isinstance(role, str) or role not in ROLES or not 1 <= len(token.sub) <= MAX_SUB_LENGTH:
        return None  # Litestar answers 401.
    if "\x00" in token.sub:
        return None  # The sub is stored with what its holder does, and PostgreSQL's text cannot hold NUL.
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


ROLES_OPT = "ledger_roles"


def requires(*roles: Role) -> dict[str, Any]:
    """A controller's ``opt``: only these roles may call its routes (checked by ``BearerMiddleware``)."""
    return {ROLES_OPT: roles}
