"""Every JSON answer ends with a newline, as a person reading curl's output and line-based tools expect.

The encoders (msgspec, Litestar's problem details) write compact JSON with no final newline, and some
answers (an unknown route's 404, a refusal by the auth middleware) are built by Litestar outside every
middleware, so the newline is added in the app's ``before_send`` hook, which every answer passes: the
body's last chunk gains it and ``Content-Length`` counts it.
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

NEWLINE = b"\n"
# Marks, in the request's scope state, an answer whose body is JSON.
_JSON_BODY = "gateway.framing.json_body"


def is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def end_json_with_newline(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        if not is_json(headers.get("content-type") or ""):
            return
        scope["state"][_JSON_BODY] = True
        length = headers.get("content-length")
        if length is not None:
            headers["content-length"] = str(int(length) + len(NEWLINE))
    elif (
        message["type"] == "http.response.body"
        and not message.get("more_body")
        # A HEAD answer announces the GET body's length but sends no body.
        and scope.get("method") != "HEAD"
        and scope["state"].get(_JSON_BODY)
    ):
        message["body"] = message.get("body", b"") + NEWLINE
