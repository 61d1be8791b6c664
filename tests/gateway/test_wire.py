"""The lean path's answers leave in one socket write (``gateway.wire``), through uvicorn's private request cycle.

Over raw sockets to a real gateway, as HTTP/1.1 clients use it: answers on a kept-alive connection, two
requests sent at once (pipelined) answered in order, ``Connection: close`` honoured; each of those answers
written whole; and the uvicorn release ``gateway.wire`` was checked against, so that a new one is checked
again before it is used.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gateway import hot, wire
from tests.gateway.server import Gateway, running

USER = "wire-user"


@pytest.fixture
def gateway(clean_database: str) -> Iterator[Gateway]:
    for gateway in running(clean_database, LEDGER_RATE_LIMIT_SERVICE_PER_MINUTE="1000"):
        admin = gateway.client("admin", "ops-1")
        funded = admin.post(
            "/api/admin/credits/adjust",
            json={"user_id": USER, "amount_millicredits": 100_000, "reason": "test funding"},
            headers={"Idempotency-Key": "wire-fund"},
        )
        assert funded.status_code == 201, funded.text
        yield gateway


@pytest.fixture
def whole_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The answers sent in one write."""
    written: list[int] = []

    async def counted(*args: Any) -> bool:
        sent = await wire.send_whole(*args)
        written.extend([1] if sent else [])
        return sent

    monkeypatch.setattr(hot, "send_whole", counted)
    return written


class Connection:
    """One HTTP/1.1 connection on a plain socket, reading answers by their Content-Length."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.socket = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        self.buffer = b""
        service = gateway.client("service", "analysis-worker")
        self.token = service.headers["Authorization"]
        # Litestar verifies a token the first time; the lean path takes the requests that follow.
        assert service.post("/api/usage/debits", json={"user_id": USER, "tokens": 1}).status_code == 422

    def debit(self, key: str, *, close: bool = False) -> bytes:
        body = json.dumps({"user_id": USER, "tokens": 1_000}).encode()
        head = (
            f"POST /api/usage/debits HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {self.token}\r\n"
            f"Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        return head.encode() + body

    def send(self, *requests: bytes) -> None:
        self.socket.sendall(b"".join(requests))

    def answer(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self.buffer += self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, json.loads(body)

    def closed(self) -> bool:
        return self.buffer == b"" and self.socket.recv(1) == b""

    def _read(self) -> bytes:
        chunk = self.socket.recv(65_536)
        assert chunk, "the server closed the connection"
        return chunk

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def connection(gateway: Gateway) -> Iterator[Connection]:
    connection = Connection(gateway)
    yield connection
    connection.close()


def test_answers_on_a_kept_alive_connection_are_each_written_whole(
    connection: Connection, whole_writes: list[int]
) -> None:
    # Given one connection, when three debits are sent on it one after another
    answers = []
    for number in range(3):
        connection.send(connection.debit(f"kept-{number}"))
        answers.append(connection.answer())

    # Then each is answered in full, with the server's own headers, and the connection stays open
    assert [status for status, _, _ in answers] == [201, 201, 201]
    assert all({"date", "server", "content-length", "x-request-id"} <= set(headers) for _, headers, _ in answers)
    assert all("connection" not in headers for _, headers, _ in answers)
    assert len({body["debit_id"] for _, _, body in answers}) == 3
    assert len(whole_writes) == 3


def test_pipelined_requests_are_answered_in_order(connection: Connection, whole_writes: list[int]) -> None:
    # Given a debit and its replay sent at once, then a new debit
    connection.send(connection.debit("piped-1"), connection.debit("piped-1"), connection.debit("piped-2"))

    # Then the three answers come back in the order of the requests
    first, replayed, second = (connection.answer() for _ in range(3))
    assert [first[0], replayed[0], second[0]] == [201, 201, 201]
    assert replayed[1].get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first[1]
    assert replayed[2]["debit_id"] == first[2]["debit_id"] != second[2]["debit_id"]
    assert len(whole_writes) == 3


def test_connection_close_is_honoured(connection: Connection, whole_writes: list[int]) -> None:
    # When a debit asks for the connection to be closed
    connection.send(connection.debit("closing", close=True))

    # Then its answer says so, and the server closes the connection after it
    status, headers, _ = connection.answer()
    assert status == 201
    assert headers["connection"] == "close"
    assert connection.closed()
    assert len(whole_writes) == 1


def test_uvicorn_is_the_release_gateway_wire_was_checked_against() -> None:
    # gateway.wire does what uvicorn's private RequestResponseCycle.send does for a whole answer: with another
    # release, read that method again, mend send_whole if it changed, then move CHECKED_WITH_UVICORN on.
    assert uvicorn.__version__ == wire.CHECKED_WITH_UVICORN
