"""A small answer in one socket write, on the connections uvicorn serves with httptools.

uvicorn's ``send`` writes a response's head when it is started and its body when it is sent: two writes,
two TCP segments, and on loopback two wake-ups of the reader for every answer. For the metered-work routes
(``gateway.hot``) those writes were a quarter of the event loop's time under load; one write raised the
debit rate by about a twentieth. ``send_whole`` does for a complete answer what uvicorn's ``send`` does for
a start followed by a final body, in the same order: wait while the client reads too slowly, drop the
answer if the client has gone, add the server's default headers (``date``, ``server``) and ``connection:
close`` when the connection is not kept alive, then mark the response complete, wake the request's
reader, close the connection if it is not kept alive and tell the protocol the response is done (the next
pipelined request then starts).

It relies on uvicorn's ``RequestResponseCycle``, which is not public: ``tests/gateway/test_wire.py`` pins
the behaviour (keep-alive, pipelining, ``Connection: close``) and the uvicorn version it was checked
against. Any other server, or a cycle in another state, answers through ASGI as before.
"""

from __future__ import annotations

from typing import Any, Final

from litestar.types import Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

# The uvicorn release this was checked against: ``send_whole`` mirrors its ``RequestResponseCycle.send``.
CHECKED_WITH_UVICORN: Final = "0.54.0"


async def send_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Send a whole answer (lower-case header names, a ``content-length`` among them) in one write.

    False when ``send`` is not uvicorn's httptools cycle ready for a response; the caller then sends the
    answer through ASGI.
    """
    cycle: Any = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle or cycle.response_started or cycle.access_log:
        return False
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return True  # As uvicorn's send: nobody is left to answer.
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    parts = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *headers):
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True
