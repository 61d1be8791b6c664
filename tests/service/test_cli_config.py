"""`ledger config set`: a billing setting changed through the ledger, audited as the operator; and `ledger verify`
reporting a hand edit of the settings' table."""

from __future__ import annotations

import getpass
from pathlib import Path

import psycopg

from projections.worker import all_runners
from tests.service.test_cli import SECRET, base_env, ledger_command


def test_config_set_changes_a_setting_as_the_operator_and_verify_catches_sql_edits(
    clean_database: str, tmp_path: Path
) -> None:
    env = base_env(LEDGER_DATABASE_URL=clean_database, LEDGER_JWT_SECRET=SECRET)
    assert ledger_command("seed", env=env, cwd=tmp_path).returncode == 0
    changed = ledger_command("config", "set", "welcome_credits", "25", env=env, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("welcome_credits: 0 -> 25 (position ")
    again = ledger_command("config", "set", "welcome_credits", "25", env=env, cwd=tmp_path)
    assert (again.returncode, again.stdout.strip()) == (0, "welcome_credits: already 25")
    out_of_range = ledger_command("config", "set", "alert_threshold_percent", "101", env=env, cwd=tmp_path)
    assert out_of_range.returncode == 2
    assert "alert_threshold_percent: must be an integer from 1 to 100" in out_of_range.stderr
    unknown = ledger_command("config", "set", "colour", "1", env=env, cwd=tmp_path)
    assert unknown.returncode == 2
    described = ledger_command("config", "set", "--help", env=env, cwd=tmp_path)
    assert "welcome_credits (0 to 1000000000)" in " ".join(described.stdout.split())

    for runner in all_runners(clean_database):
        runner.catch_up()
    with psycopg.connect(clean_database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT actor, actor_role, old::text, new::text FROM audit_log WHERE action = 'billing_config.changed'"
        ).fetchall()
        assert rows == [(f"cli:{getpass.getuser()}", "system", '{"welcome_credits": 0}', '{"welcome_credits": 25}')]
        assert conn.execute("SELECT value FROM billing_config WHERE key = 'welcome_credits'").fetchone() == (25,)
    assert ledger_command("verify", env=env, cwd=tmp_path).returncode == 0

    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("UPDATE billing_config SET value = 99 WHERE key = 'welcome_credits'")
    edited = ledger_command("verify", env=env, cwd=tmp_path)
    assert edited.returncode == 1
    assert "billing_config welcome_credits: events say 25, view says 99" in edited.stdout
