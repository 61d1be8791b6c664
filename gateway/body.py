"""Strict decoding of request bodies, before Litestar's own.

Litestar converts a body to its Struct with msgspec's lax rules, which turn ``"5"`` and ``5.0`` into
``5``. The contract refuses both, so each body is first decoded here with ``strict=True`` against the
handler's own ``data`` type; a refusal names the field and the reason.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request

from gateway.problems import problem
from ledger.errors import InvalidCommandError

_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"field `(?P<name>[^`]+)`")


def field_and_reason(message: str) -> tuple[str, str]:
    """Turn msgspec's message into the field it is about and the reason, e.g. ("tokens", "Expected `int`...")."""
    match = _PATH.match(message)
    reason, path = (match["reason"], match["path"] or "") if match else (message, "")
    named = _NAMED.search(reason)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
    return path.replace("[", ".").replace("]", "") or "body", reason


async def decode_strictly(request: Request[Any, Any, Any]) -> None:
    """A ``before_request`` hook: refuse a body that is not exactly the handler's ``data`` type."""
    parameter = request.route_handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        return
    raw = await request.body()
    try:
        msgspec.json.decode(raw, type=parameter.annotation, strict=True)
    except msgspec.ValidationError as error:
        field, reason = field_and_reason(str(error))
        raise InvalidCommandError(field, reason) from None
    except msgspec.DecodeError:
        raise problem("malformed-request", 400, "the body is not valid JSON") from None
    except UnicodeDecodeError:
        # msgspec checks the UTF-8 of strings as it reads them, and says so with this error of its own kind.
        raise problem("malformed-request", 400, "the body is not valid UTF-8") from None
