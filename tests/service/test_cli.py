"""The ``ledger`` command: configuration errors, token minting, and the embedded server's lifecycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from gateway.settings import SettingsError, load_settings
from ledger.application import Ledger
from ledger.commands import GrantCredits
from ledger.persistence import postgres_env

SECRET = "s" * 40


def ledger_command(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(extra)
    return env


def test_a_configured_database_without_a_jwt_secret_fails_fast() -> None:
    with pytest.raises(SettingsError, match="LEDGER_JWT_SECRET"):
        load_settings({"LEDGER_DATABASE_URL": "postgresql://x@127.0.0.1/db"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEDGER_DATABASE_URL", "mysql://x"),
        ("LEDGER_DB_POOL_SIZE", "many"),
        ("LEDGER_DB_POOL_SIZE", "0"),
        ("LEDGER_JWT_SECRET", "short"),
        ("LEDGER_LOG_LEVEL", "LOUD"),
    ],
)
def test_malformed_settings_are_named(name: str, value: str) -> None:
    env = {"LEDGER_DATABASE_URL": "postgresql://x@127.0.0.1/db", "LEDGER_JWT_SECRET": SECRET, name: value}
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


def test_the_log_level_is_read_in_any_case() -> None:
    env = {"LEDGER_DATABASE_URL": "postgresql://x@127.0.0.1/db", "LEDGER_JWT_SECRET": SECRET}
    assert load_settings({**env, "LEDGER_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert load_settings(env).log_level == "INFO"


def test_token_mints_a_verifiable_jwt(tmp_path: Path) -> None:
    result = ledger_command(
        "token", "--role", "admin", "--sub", "ops-1", env=base_env(LEDGER_JWT_SECRET=SECRET), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == ("ops-1", "admin")
    assert claims["exp"] > time.time()


def test_migrate_on_a_configured_database(database_url: str, tmp_path: Path) -> None:
    result = ledger_command(
        "migrate", env=base_env(LEDGER_DATABASE_URL=database_url, LEDGER_JWT_SECRET=SECRET), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout


def _serve(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        env=base_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(port: int, deadline_seconds: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < deadline_seconds:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"not ready within {deadline_seconds} s")


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


def test_serve_with_no_database_runs_embedded_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    port = 18_000 + os.getpid() % 1_000
    server = _serve(tmp_path, port)
    try:
        _wait_ready(port)
    except BaseException:
        server.kill()
        raise
    pgdata = tmp_path / ".ledger" / "pgdata"
    url = f"postgresql://postgres:@/ledger?host={pgdata}"
    ledger = Ledger(postgres_env(url))
    ledger.grant_credits(
        GrantCredits(user_id="kept", amount_millicredits=4_242, source="admin"),
        idempotency=None,
        now=datetime.now(UTC),
    )
    ledger.close()
    output = _stop(server)
    assert f"data in {pgdata}" in output
    assert "http://127.0.0.1:" in output
    assert not (pgdata / "postmaster.pid").exists()  # Ctrl-C stopped PostgreSQL too.

    server = _serve(tmp_path, port)
    try:
        _wait_ready(port)
        ledger = Ledger(postgres_env(url))
        assert ledger.get_balance("kept", now=datetime.now(UTC)).balance_millicredits == 4_242
        ledger.close()
    finally:
        _stop(server)


def test_verify_exits_zero_when_the_view_agrees_and_one_when_it_does_not(clean_database: str, tmp_path: Path) -> None:
    from projections.worker import all_runners  # noqa: PLC0415

    ledger = Ledger(postgres_env(clean_database))
    ledger.grant_credits(
        GrantCredits(user_id="v1", amount_millicredits=900, source="admin"), idempotency=None, now=datetime.now(UTC)
    )
    ledger.close()
    for runner in all_runners(clean_database):
        runner.catch_up()
    env = base_env(LEDGER_DATABASE_URL=clean_database, LEDGER_JWT_SECRET=SECRET)
    agreed = ledger_command("verify", env=env, cwd=tmp_path)
    assert (agreed.returncode, agreed.stdout.strip()) == (0, "0 difference(s)")
    import psycopg  # noqa: PLC0415

    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("UPDATE user_credits SET balance_millicredits = 901")
    differed = ledger_command("verify", env=env, cwd=tmp_path)
    assert differed.returncode == 1
    assert "v1: events say balance_millicredits=900" in differed.stdout


def test_verify_exits_two_with_the_count_when_the_views_are_behind(clean_database: str, tmp_path: Path) -> None:
    from projections.worker import all_runners  # noqa: PLC0415

    ledger = Ledger(postgres_env(clean_database))
    ledger.grant_credits(
        GrantCredits(user_id="v2", amount_millicredits=900, source="admin"), idempotency=None, now=datetime.now(UTC)
    )
    for runner in all_runners(clean_database):
        runner.catch_up()
    # Given two more events that no projection has applied (no worker runs),
    ledger.grant_credits(
        GrantCredits(user_id="v2", amount_millicredits=100, source="admin"), idempotency=None, now=datetime.now(UTC)
    )
    ledger.close()
    # when verify runs, then what the views hold agrees with the log up to their position, and it says by
    # how much each view is behind, and exits 2.
    behind = ledger_command(
        "verify", env=base_env(LEDGER_DATABASE_URL=clean_database, LEDGER_JWT_SECRET=SECRET), cwd=tmp_path
    )
    assert behind.returncode == 2, behind.stdout + behind.stderr
    assert "0 difference(s)" in behind.stdout
    assert "accounts: 1 event(s) behind the log" in behind.stdout
    assert "is `ledger project`" in behind.stderr
