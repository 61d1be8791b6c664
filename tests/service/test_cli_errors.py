"""What a person sees when the ``ledger`` command cannot do its job: one or two lines that name the cause and
what to change, a non-zero exit, and no traceback. Each case runs the real command in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from gateway.cli import ROLES, main
from projections.worker import all_projections
from tests.gateway.server import free_port
from tests.service.test_cli import SECRET, base_env, ledger_command

DATABASE_COMMANDS = ["migrate", "seed", "project", "verify", "rebuild", "serve"]


def assert_told(result: subprocess.CompletedProcess[str], code: int, *phrases: str) -> list[str]:
    """The exit code, every phrase on stderr, at most two lines there, and no traceback anywhere."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert 1 <= len(lines) <= 2, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)
    return lines


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_a_database_that_does_not_answer_is_named(command: str, tmp_path: Path) -> None:
    port = free_port()  # Nothing listens there.
    env = base_env(LEDGER_DATABASE_URL=f"postgresql://postgres:hunter2@127.0.0.1:{port}/x", LEDGER_JWT_SECRET=SECRET)
    result = ledger_command(command, env=env, cwd=tmp_path)
    assert_told(result, 1, f"could not connect to PostgreSQL at 127.0.0.1:{port}/x: Connection refused")
    assert "LEDGER_DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", DATABASE_COMMANDS)
def test_a_database_that_does_not_exist_is_named(command: str, database_url: str, tmp_path: Path) -> None:
    name = f"missing_{uuid.uuid4().hex[:8]}"
    missing = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    env = base_env(LEDGER_DATABASE_URL=missing, LEDGER_JWT_SECRET=SECRET)
    result = ledger_command(command, env=env, cwd=tmp_path)
    assert_told(result, 1, "could not connect to PostgreSQL at ", f'/{name}: database "{name}" does not exist')


def test_a_bad_log_level_names_the_variable_and_the_levels(tmp_path: Path) -> None:
    result = ledger_command("verify", env=base_env(LEDGER_LOG_LEVEL="LOUD", LEDGER_JWT_SECRET=SECRET), cwd=tmp_path)
    assert_told(result, 2, "configuration error", "LEDGER_LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR, CRITICAL", "'LOUD'")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_named_with_the_way_out(
    workers: str, held_port: int, database_url: str, tmp_path: Path
) -> None:
    env = base_env(LEDGER_DATABASE_URL=database_url, LEDGER_JWT_SECRET=SECRET)
    started = time.monotonic()
    result = ledger_command("serve", "--port", str(held_port), "--workers", workers, env=env, cwd=tmp_path)
    assert_told(result, 1, f"127.0.0.1:{held_port} is already in use", "--port")
    assert "serving on" not in result.stdout
    assert time.monotonic() - started < 20


def test_a_port_in_use_leaves_no_embedded_postgres_behind(held_port: int, tmp_path: Path) -> None:
    result = ledger_command("serve", "--port", str(held_port), env=base_env(), cwd=tmp_path)
    assert_told(result, 1, f"127.0.0.1:{held_port} is already in use", "--port")
    # The port is checked before the embedded server would start, so none runs on this data directory.
    assert not (tmp_path / ".ledger" / "pgdata" / "postmaster.pid").exists()
    assert not any(str(tmp_path) in command for command in _command_lines())


def _command_lines() -> Iterator[str]:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            yield cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # The process ended while we looked.
            continue


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # Wrapped lines joined again.


def test_serve_help_shows_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, "serve")
    for default in ["(default: 127.0.0.1)", "(default: 8000)", "(default: 1)", "1-64"]:
        assert default in text, text


def test_rebuild_help_lists_every_projection(capsys: pytest.CaptureFixture[str]) -> None:
    names = [projection.name for projection in all_projections()]
    assert "{" + ",".join(names) + "}" in help_text(capsys, "rebuild")


def test_token_help_lists_the_roles_and_the_ttl_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, "token")
    assert "{" + ",".join(ROLES) + "}" in text
    assert "(default: 3600)" in text


def test_an_unknown_projection_is_refused_with_the_choices(tmp_path: Path) -> None:
    result = ledger_command("rebuild", "nope", env=base_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert all(projection.name in result.stderr for projection in all_projections())
    assert "Traceback" not in result.stderr
