"""The whole benchmark in one command: ``python3 -m uv run python -m bench.run``.

It resets the database ``bench`` on the local PostgreSQL, migrates and seeds it, measures the raw
PostgreSQL ceiling with pgbench, writes a 100,000-event account through the Python ledger API, starts
``ledger serve`` and ``ledger project`` against that database and the local Redis, funds the accounts
(Python API by default, ``--fund-via http`` for the admin endpoint), runs the scenarios, stops the
service, runs ``ledger verify``, prints a table and writes ``bench/results/latest.json``.
See bench/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import psycopg

from bench import chain_cost, dashboard, lots_cost, procs, profile, wal
from bench.history import build_long_and_fresh, bulk_open, copy_open
from bench.loadgen import Latencies, LoadResult, Paced, Repeat, Script, Sequence, Stats, run_load
from bench.report import legend, table, write_json
from gateway.cli import mint_token

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
MAX_SAFE = 9_007_199_254_740_991
FUND_MILLICREDITS = 10**12
RATE_LIMIT = "100000000"
# The whole run should end within 10 minutes; the memory step gives way if needed.
TIME_BUDGET_S = 570.0
VERIFY_RESERVE_S = 90.0
# The table's order; 2 (pgbench) runs first and 0 (funding) is setup, shown last.
ORDER = ("1", "2", "3c", "3", "3p", "3h", "3s", "4", "5", "6", "7l", "7f", "8", "0")
# Issue 16's paced row: debits at about this rate, over the same connections, each waiting a random interval.
PACED_RATE_PER_S = 1_000
# The single-connection row: sequential debits on an otherwise idle server.
SINGLE_CONNECTION_SECONDS = 10.0
# Groups of processes whose CPU a debit costs (bench.procs's names) and how the table heads them.
CPU_GROUPS = {"server": "server", "postgres": "PostgreSQL", "projector": "projector", "loadgen": "load generator"}


def log(message: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# Small HTTP helper for single, unmeasured calls (setup, readiness).


def call(port: int, method: str, path: str, *, token: str | None = None, body: Any = None,
         key: str | None = None, timeout: float = 30.0) -> tuple[int, bytes]:  # fmt: skip
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# Request templates: headers encoded once, the varying parts filled with bytes formatting.


def _head(method: str, path: str, port: int, token: str | None, *, json_body: bool, keyed: bool) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if json_body:
        lines.append("Content-Type: application/json")
    head = "\r\n".join(lines) + "\r\n"
    if keyed:
        head += "Idempotency-Key: "
    return head.encode()


def keyed_post(port: int, path: str, token: str, key: bytes, body: bytes) -> bytes:
    return b"%sIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        _head("POST", path, port, token, json_body=True, keyed=False),
        key,
        len(body),
        body,
    )


class Requests:
    """Builders of every request the scenarios send."""

    def __init__(self, port: int, run_id: str, service: str, admin: str) -> None:
        self.port = port
        self.run_id = run_id.encode()
        self.service = service
        self.admin = admin
        self.keys = count()
        self.debit_head = _head("POST", "/api/usage/debits", port, service, json_body=True, keyed=True)
        self.reserve_head = _head("POST", "/api/usage/reservations", port, service, json_body=True, keyed=True)
        self.settle_prefix = _head("POST", "/api/usage/reservations/", port, service, json_body=True, keyed=True)
        self.live = f"GET /health/live HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()

    def key(self, tag: bytes) -> bytes:
        return b"%s-%s-%d" % (self.run_id, tag, next(self.keys))

    def debit(self, user: bytes, tokens: int) -> bytes:
        body = b'{"user_id":"%s","tokens":%d}' % (user, tokens)
        return b"%s%s\r\nContent-Length: %d\r\n\r\n%s" % (self.debit_head, self.key(b"d"), len(body), body)

    def reserve(self, user: bytes, estimated_tokens: int) -> bytes:
        body = b'{"user_id":"%s","estimated_tokens":%d}' % (user, estimated_tokens)
        return b"%s%s\r\nContent-Length: %d\r\n\r\n%s" % (self.reserve_head, self.key(b"r"), len(body), body)

    def settle(self, reservation_id: bytes, tokens: int) -> bytes:
        head = _head("POST", f"/api/usage/reservations/{reservation_id.decode()}/settle", self.port, self.service,
                     json_body=True, keyed=True)  # fmt: skip
        body = b'{"tokens":%d}' % tokens
        return b"%s%s\r\nContent-Length: %d\r\n\r\n%s" % (head, self.key(b"s"), len(body), body)

    def adjust(self, user: str, amount: int) -> bytes:
        body = json.dumps({"user_id": user, "amount_millicredits": amount, "reason": "bench funding"}).encode()
        return keyed_post(self.port, "/api/admin/credits/adjust", self.admin, self.key(b"f"), body)

    def balance(self, user_token: str) -> bytes:
        return _head("GET", "/api/credits/balance", self.port, user_token, json_body=False, keyed=False) + b"\r\n"


class ReserveSettle(Script):
    """A reservation, then its settlement as soon as it is answered; one pair's latency is both together."""

    def __init__(self, stats: Stats, requests: Requests, users: list[bytes], steps: dict[str, Latencies]) -> None:
        self.stats = stats
        self.requests = requests
        self.users = users
        self.steps = steps
        self.settling = False
        self.pair_sent_ns = 0

    def first(self) -> bytes | None:
        return self.requests.reserve(random.choice(self.users), 1_000)

    def next(self, status: int, body: bytes, sent_ns: int, done_ns: int) -> bytes | None:
        window = self.stats.window
        in_window = sent_ns >= window.start_ns and done_ns <= window.end_ns
        if not self.settling:
            self.pair_sent_ns = sent_ns
            at = body.find(b'"reservation_id":"')
            if status != 201 or at < 0:
                self.stats.record(ok=False, status=status, sent_ns=sent_ns, done_ns=done_ns, body=body)
                return None if window.over(done_ns) else self.requests.reserve(random.choice(self.users), 1_000)
            if in_window:
                self.steps["reserve"].add(done_ns - sent_ns)
            start = at + 18
            reservation_id = body[start : body.index(b'"', start)]
            self.settling = True
            # A started pair is always finished, even after the window, so no hold is left open.
            return self.requests.settle(reservation_id, random.randint(500, 1_000))
        self.settling = False
        if in_window and status == 200:
            self.steps["settle"].add(done_ns - sent_ns)
        self.stats.record(ok=status == 200, status=status, sent_ns=self.pair_sent_ns, done_ns=done_ns, body=body)
        return None if window.over(done_ns) else self.requests.reserve(random.choice(self.users), 1_000)


# The bench itself.


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin_url = args.admin_url
        self.database_url = args.database_url
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        self.secret = secrets.token_urlsafe(48)
        self.logs = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
        self.port = free_port()
        self.server: procs.Service | None = None
        self.projector: procs.Service | None = None
        self.started = time.monotonic()
        self.scenarios: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {
            "run_id": self.run_id,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "scenarios": self.scenarios,
            "failures": [],
        }
        self.postmaster: int | None = None
        self.users = [f"bench-{n}" for n in range(args.accounts)]
        self.user_bytes = [u.encode() for u in self.users]
        self.long_user, self.fresh_user = "history-long", "history-fresh"

    # Environment and processes.

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            LEDGER_DATABASE_URL=self.database_url,
            LEDGER_JWT_SECRET=self.secret,
            LEDGER_REDIS_URL=self.args.redis_url,
            LEDGER_LOG_LEVEL="WARNING",
            LEDGER_RATE_LIMIT_SERVICE_PER_MINUTE=RATE_LIMIT,
            LEDGER_RATE_LIMIT_USER_PER_MINUTE=RATE_LIMIT,
            LEDGER_RATE_LIMIT_ADMIN_PER_MINUTE=RATE_LIMIT,
        )
        return env

    def ledger_command(self, *arguments: str, timeout: float = 600) -> tuple[int, str, float]:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *arguments],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode, (done.stdout + done.stderr).strip(), time.perf_counter() - started

    def cpu_roots(self) -> dict[str, int | None]:
        return {
            "server": self.server.pid if self.server else None,
            "projector": self.projector.pid if self.projector else None,
            "loadgen": os.getpid(),
            "postgres": self.postmaster,
        }

    def server_rss(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, service in (("server", self.server), ("projector", self.projector)):
            if service is not None and service.pid is not None:
                tree = procs.tree_rss_kib(service.pid)
                result[name] = {"total_mib": round(sum(tree.values()) / 1024, 1),
                                "per_process_mib": {str(p): round(v / 1024, 1) for p, v in tree.items()}}  # fmt: skip
        return result

    def stop_services(self) -> None:
        for service in (self.server, self.projector):
            if service is not None and service.alive():
                code = service.stop()
                log(f"stopped {service.name} (exit {code})")

    # Database.

    def reset_database(self) -> None:
        name = self.args.database
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else []

    def projection_lag(self) -> int:
        rows = self.sql(
            "SELECT (SELECT coalesce(max(notification_id), 0) FROM ledger_events)"
            " - coalesce((SELECT position FROM projection_positions WHERE name = 'accounts'), 0)"
        )
        return int(rows[0][0])

    def wait_for_projection(self, limit_s: float) -> dict[str, Any]:
        started = time.perf_counter()
        lag = first = self.projection_lag()
        while lag > 0 and time.perf_counter() - started < limit_s:
            time.sleep(0.1)
            lag = self.projection_lag()
        return {"lag_events_before": first, "lag_events_after": lag,
                "catch_up_seconds": round(time.perf_counter() - started, 2)}  # fmt: skip

    def checkpoint(self) -> None:
        self.sql("CHECKPOINT")

    # Steps.

    def setup(self) -> None:
        if shutil.which("pgbench") is None:
            raise SystemExit("pgbench is not on PATH (apt-get install postgresql-client)")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
            settings = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', 'shared_buffers',"
                " 'synchronous_commit', 'fsync', 'max_wal_size', 'checkpoint_timeout', 'server_version')"
            ).fetchall()
        self.postmaster = procs.postmaster_pid(row[0]) if row else None
        self.result["postgres"] = dict(settings)
        before = procs.snapshot()
        time.sleep(2)
        idle = procs.cpu_breakdown(before, procs.snapshot(), {"loadgen": os.getpid(), "postgres": self.postmaster})
        self.result["machine_before_run"] = idle
        log(f"machine before the run: {idle['machine_busy']}% of one core busy (of {idle['machine_capacity']:.0f}%)")
        if idle["machine_busy"] > 25:
            log("WARNING: other work is using the machine; every number below will be pessimistic")
        log(f"resetting database {self.args.database}")
        self.reset_database()
        timings = {}
        for step in ("migrate", "seed"):
            code, output, seconds = self.ledger_command(step)
            timings[f"{step}_seconds"] = round(seconds, 2)
            if code != 0:
                raise SystemExit(f"ledger {step} failed ({code}): {output}")
            log(f"ledger {step}: {output.splitlines()[-1] if output else ''} ({seconds:.1f} s)")
        self.result["setup"] = timings

    def pgbench(self) -> None:
        n = self.args.accounts
        log(f"pgbench: {self.args.connections} clients, -j 2, {self.args.duration:g} s over {n:,} accounts")
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_movements, bench_balances")
            conn.execute(
                "CREATE TABLE bench_balances (id int PRIMARY KEY, balance bigint NOT NULL, version bigint NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE bench_movements (account_id int NOT NULL, version bigint NOT NULL, kind text,"
                " state bytea, id bigserial NOT NULL, PRIMARY KEY (account_id, version))"
            )
            conn.execute("CREATE UNIQUE INDEX bench_movements_id_idx ON bench_movements (id)")
            conn.execute(
                "INSERT INTO bench_balances SELECT g, %s, 0 FROM generate_series(1, %s) AS g", (FUND_MILLICREDITS, n)
            )
            conn.execute("VACUUM ANALYZE bench_balances")
            conn.execute("CHECKPOINT")
        log_dir = Path(tempfile.mkdtemp(prefix="pgbench-", dir=self.logs))
        argv = ["pgbench", "-n", "-M", "prepared", "-c", str(self.args.connections), "-j", "2",
                "-T", str(max(1, round(self.args.duration))), "-D", f"accounts={n}",
                "-f", str(BENCH_DIR / "pgbench_debit.sql"), "-l", "--log-prefix", str(log_dir / "tx"),
                "-h", HOST, "-p", str(self.args.pg_port), "-U", self.args.pg_user, self.args.database]  # fmt: skip
        # CPU is read inside the run (its backends exit with it): from 10% to 90% of its duration.
        duration = max(1, round(self.args.duration))
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=log_dir)
        time.sleep(0.1 * duration)
        before = procs.snapshot()
        time.sleep(0.8 * duration)
        after = procs.snapshot()
        stdout, stderr = process.communicate()
        done = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
        cpu = procs.cpu_breakdown(before, after, self.cpu_roots())
        latencies = Latencies(4_000_000)
        failed = 0
        for path in sorted(log_dir.glob("tx*")):
            with path.open() as lines:
                for line in lines:
                    fields = line.split()
                    # client_id transaction_no time script_no time_epoch time_us [schedule_lag]
                    if fields[2] == "failed" or fields[2] == "skipped":
                        failed += 1
                        continue
                    latencies.add(int(fields[2]) * 1000)
        shutil.rmtree(log_dir, ignore_errors=True)
        tps = None
        for line in done.stdout.splitlines():
            if line.startswith("tps =") and "without initial connection time" in line:
                tps = float(line.split()[2])
        if done.returncode != 0:
            self.result["failures"].append(f"pgbench exited {done.returncode}: {done.stderr.strip()[-500:]}")
        run_seconds = float(duration)
        record = {
            "id": "2",
            "title": "pgbench 3-stmt debit txn (raw PG)",
            "rate_per_s": round(tps if tps is not None else latencies.count / run_seconds, 1),
            "ok": latencies.count,
            "errors": failed + (0 if done.returncode == 0 else 1),
            "latency": latencies.summary(),
            "cpu": cpu,
            "loadgen_cpu_percent": cpu["pgbench"],
            "pgbench_output": done.stdout.strip().splitlines()[-12:],
        }
        self.scenarios.append(record)
        # Free the space: the ledger's tables should have the buffers during the HTTP scenarios.
        self.sql("TRUNCATE bench_movements")
        log(f"pgbench: {record['rate_per_s']:,.0f} tps, p99 {record['latency']['p99_ms']} ms")

    def build_history(self) -> None:
        log(f"writing a {self.args.history_events:,}-event account through the Python API")
        info = build_long_and_fresh(
            self.database_url, long_user=self.long_user, fresh_user=self.fresh_user, events=self.args.history_events
        )
        self.result["history_build"] = info
        log(f"history: {info['events']:,} events in {info['build_seconds']} s ({info['events_per_second']:,}/s)")

    def start_services(self) -> None:
        python = [sys.executable, "-m", "gateway.cli"]
        serve = [*python, "serve", "--host", HOST, "--port", str(self.port), "--workers", str(self.args.workers)]
        # The projections run in `ledger project`, as in a deployment; the server must not run them too.
        _, help_text, _ = self.ledger_command("serve", "--help", timeout=60)
        if "--no-projections" in help_text:
            serve.append("--no-projections")
        self.result["serve_command"] = " ".join(["ledger", *serve[3:]])
        self.server = procs.Service("server", serve, self.env(), self.logs / "serve.log")
        self.projector = procs.Service("projector", [*python, "project"], self.env(), self.logs / "project.log")
        self.projector.start()
        self.server.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not self.server.alive():
                raise SystemExit(f"ledger serve exited:\n{self.server.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if call(self.port, "GET", "/health/live", timeout=2)[0] == 200:
                    break
            time.sleep(0.2)
        else:
            raise SystemExit(f"ledger serve did not answer in 90 s:\n{self.server.log_tail()}")
        log(f"server up on port {self.port} (pid {self.server.pid}), projector pid {self.projector.pid}")
        self.result["rss_after_start"] = self.server_rss()

    def mint(self) -> None:
        ttl = 3 * 3600
        self.service_token = mint_token(self.secret, role="service", sub="bench-service", ttl_seconds=ttl)
        self.admin_token = mint_token(self.secret, role="admin", sub="bench-admin", ttl_seconds=ttl)
        started = time.perf_counter()
        self.user_tokens = [mint_token(self.secret, role="user", sub=u, ttl_seconds=ttl) for u in self.users]
        log(f"minted {len(self.user_tokens):,} user tokens in {time.perf_counter() - started:.2f} s")
        self.requests = Requests(self.port, self.run_id, self.service_token, self.admin_token)

    def configure_and_fund(self) -> None:
        status, body = call(
            self.port, "PUT", "/api/admin/billing-config", token=self.admin_token, key=f"{self.run_id}-config",
            body={"hourly_token_limit": MAX_SAFE, "daily_token_limit": MAX_SAFE,
                  "min_balance_for_analysis_millicredits": 0},
        )  # fmt: skip
        self.result["billing_config"] = {"status": status, "body": body[:500].decode(errors="replace")}
        if status != 200:
            self.result["failures"].append(f"PUT /api/admin/billing-config: {status} {body[:300]!r}")
            log(f"billing-config answered {status}: {body[:300]!r}")
        if self.args.fund_via == "api":
            log(f"funding {len(self.users):,} accounts through the Python ledger API (1,000 accounts per save)")
            info = bulk_open(self.database_url, self.users, grant_millicredits=FUND_MILLICREDITS)
            info["catch_up"] = self.wait_for_projection(120)
            self.result["funding"] = {"via": "python ledger API, bulk saves", **info}
            log(f"funded: {info['accounts']:,} accounts in {info['seconds']} s; projection caught up in"
                f" {info['catch_up']['catch_up_seconds']} s")  # fmt: skip
            return
        pending = iter([self.requests.adjust(user, FUND_MILLICREDITS) for user in self.users])

        def make() -> bytes | None:
            return next(pending, None)

        log(f"funding {len(self.users):,} accounts over HTTP (POST /api/admin/credits/adjust)")
        result = self.load(lambda stats: _Drain(stats, make, 201), warmup_s=0, duration_s=None)
        record = self.record("0", "setup: fund accounts (admin adjust)", result)
        record["catch_up"] = self.wait_for_projection(120)
        self.result["funding"] = {"via": "HTTP POST /api/admin/credits/adjust", "seconds": record["seconds"]}
        log(f"funded: {record['ok']:,} ok, {record['errors']} errors, {record['rate_per_s']:,.0f}/s")

    def load(self, scripts: Callable[[Stats], Script], *, warmup_s: float, duration_s: float | None,
             connections: int | None = None, extra: Callable[[], Any] | None = None,
             label: str | None = None) -> LoadResult:  # fmt: skip
        snapshots: dict[str, procs.Snapshot] = {}
        log_written: dict[str, wal.WalCounters | None] = {}
        profiling: list[Any] = []
        profile_dir = self.args.out.parent / "profiles" / self.run_id

        def on_open() -> None:
            snapshots["start"] = procs.snapshot()
            log_written["start"] = wal.read(self.admin_url)
            if self.args.py_spy and label and duration_s:
                snap = snapshots["start"]
                roles = {
                    service.name: sorted(
                        pid for pid in procs.descendants(service.pid, snap) if snap.procs[pid].comm.startswith("python")
                    )
                    for service in (self.server, self.projector)
                    if service is not None and service.pid is not None
                }
                profiling.extend(profile.start(self.args.py_spy, roles, duration_s, profile_dir, label))

        def on_close() -> None:
            snapshots["end"] = procs.snapshot()
            log_written["end"] = wal.read(self.admin_url)

        async def go() -> LoadResult:
            task = asyncio.ensure_future(extra()) if extra is not None else None
            try:
                return await run_load(
                    HOST, self.port, connections=connections or self.args.connections, scripts=scripts,
                    warmup_s=warmup_s, duration_s=duration_s, on_open=on_open, on_close=on_close,
                )  # fmt: skip
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

        result = asyncio.run(go())
        result.hooks["cpu"] = procs.cpu_breakdown(snapshots["start"], snapshots["end"], self.cpu_roots())
        result.hooks["wal_per_request"] = wal.per_request(
            log_written.get("start"), log_written.get("end"), result.stats.ok
        )
        if profiling and label:
            result.hooks["profile"] = profile.finish(profiling, profile_dir, label, ["server", "projector"])
        return result

    def record(self, scenario_id: str, title: str, result: LoadResult, **more: Any) -> dict[str, Any]:
        record = {"id": scenario_id, "title": title, **result.as_dict(), "cpu": result.hooks.get("cpu"),
                  "wal_per_request": result.hooks.get("wal_per_request"), **more}  # fmt: skip
        if "profile" in result.hooks:
            record["profile"] = result.hooks["profile"]
        record["projection_lag_at_end"] = self.projection_lag()
        record["rss_after"] = self.server_rss()
        self.scenarios.append(record)
        if record["errors"]:
            log(
                f"  {title}: {record['errors']} errors, statuses {record['statuses']},"
                f" e.g. {record['error_samples'][:2]}"
            )
        return record

    def timed(self, scenario_id: str, title: str, scripts: Callable[[Stats], Script], *, writes: bool,
              **more: Any) -> dict[str, Any]:  # fmt: skip
        catch_up = self.wait_for_projection(30)
        if writes:
            self.checkpoint()
        log(f"scenario {scenario_id}: {title} ({self.args.warmup:g} s warm-up + {self.args.duration:g} s)")
        result = self.load(scripts, warmup_s=self.args.warmup, duration_s=self.args.duration, label=f"s{scenario_id}")
        record = self.record(scenario_id, title, result, catch_up_before=catch_up, **more)
        latency = record["latency"]
        log(f"  {record['rate_per_s']:,.0f}/s p50 {latency['p50_ms']} p99 {latency['p99_ms']} ms,"
            f" load generator {record['loadgen_cpu_percent']}% of a core")  # fmt: skip
        return record

    def scenarios_http(self) -> None:
        requests, users = self.requests, self.user_bytes
        live = requests.live
        self.timed("1", "GET /health/live (HTTP ceiling)", lambda s: Repeat(s, lambda: live, 200), writes=False)

        def debit() -> bytes:
            return requests.debit(random.choice(users), random.randint(1, 1_000))

        self.first_debits()
        top = self.timed("3", f"debits, {len(users):,} accounts", lambda s: Repeat(s, debit, 201), writes=True)
        self.paced_debits(debit, top["rate_per_s"])
        hot = users[0]

        def hot_debit() -> bytes:
            return requests.debit(hot, random.randint(1, 1_000))

        self.timed("4", "debits, one hot account", lambda s: Repeat(s, hot_debit, 201), writes=True)
        steps = {"reserve": Latencies(2_000_000), "settle": Latencies(2_000_000)}
        record = self.timed("5", "reserve+settle pairs", lambda s: ReserveSettle(s, requests, users, steps),
                            writes=True)  # fmt: skip
        record["requests_per_s"] = round(2 * record["rate_per_s"], 1)
        record["steps"] = {name: latencies.summary() for name, latencies in steps.items()}
        balance_requests = [requests.balance(token) for token in self.user_tokens]

        def balance() -> bytes:
            return random.choice(balance_requests)

        self.timed("6", "balance reads (user tokens)", lambda s: Repeat(s, balance, 200), writes=False)

    def first_debits(self) -> None:
        """One debit of each account (3c) before the measured debits: a server that has been serving its
        accounts holds them in memory (``LEDGER_CACHE_MAXSIZE``, 10,000 by default), and that is the state
        scenario 3 measures. Without this pass its window was mostly the first read of each account from its
        snapshot, which scenario 7 measures on its own. The pass is shown as its own row."""
        catch_up = self.wait_for_projection(30)
        log(f"scenario 3c: one debit of each of the {len(self.user_bytes):,} accounts (the server's cache cold)")
        result = self.debit_each(self.user_bytes, label="s3c")
        record = self.record("3c", "debits, each account's first (cold)", result, catch_up_before=catch_up)
        log(f"  {record['rate_per_s']:,.0f}/s p50 {record['latency']['p50_ms']} p99 {record['latency']['p99_ms']} ms")

    def debit_each(self, users: list[bytes], *, label: str) -> LoadResult:
        """One debit of 1 token on each of ``users``, in turn, over the connections: afterwards the server
        holds those accounts in memory (as many as ``LEDGER_CACHE_MAXSIZE``)."""
        pending = iter([self.requests.debit(user, 1) for user in users])

        def make() -> bytes | None:
            return next(pending, None)

        return self.load(lambda stats: _Drain(stats, make, 201), warmup_s=0, duration_s=None, label=label)

    def paced_debits(self, debit: Callable[[], bytes], top_rate: float) -> None:
        """Scenario 3's debits paced below the maximum: at about 1,000/s (3p) and at half of scenario 3's rate
        (3h), each connection waiting a random interval between requests; then one connection alone (3s)."""
        connections = self.args.connections
        for scenario_id, rate in (("3p", PACED_RATE_PER_S), ("3h", top_rate / 2)):
            per_connection = max(rate, 1.0) / connections
            self.timed(
                scenario_id,
                f"debits paced at {rate:,.0f}/s",
                lambda s, per_connection=per_connection: Paced(s, debit, 201, rate_per_s=per_connection),
                writes=True,
                target_rate_per_s=round(rate, 1),
            )
        catch_up = self.wait_for_projection(30)
        log(f"scenario 3s: debits on one connection, idle server ({SINGLE_CONNECTION_SECONDS:g} s)")
        result = self.load(
            lambda s: Repeat(s, debit, 201),
            warmup_s=1.0,
            duration_s=SINGLE_CONNECTION_SECONDS,
            connections=1,
            label="s3s",
        )
        self.record("3s", "debits, one connection (idle server)", result, catch_up_before=catch_up)

    def scenario_history(self) -> None:
        log("scenario 7: sequential debits, long history vs fresh account")
        self.wait_for_projection(120)
        out: dict[str, Any] = {}
        for label, user in (("long", self.long_user), ("fresh", self.fresh_user)):
            sequence: dict[str, Sequence] = {}

            def make(user: bytes = user.encode()) -> bytes:
                return self.requests.debit(user, 10)

            def scripts(
                stats: Stats, make: Callable[[], bytes] = make, sequence: dict[str, Sequence] = sequence
            ) -> Script:
                sequence["s"] = Sequence(stats, make, 201, self.args.sequential)
                return sequence["s"]

            result = self.load(scripts, warmup_s=0, duration_s=None, connections=1)
            record = self.record(f"7{label[0]}", f"sequential debits, {label} account", result)
            record["first_request_ms"] = sequence["s"].first_latency_ms
            record["first_request_status"] = sequence["s"].first_status
            out[label] = record
        self.result["history_compare"] = {
            "p50_ratio_long_to_fresh": _ratio(out["long"]["latency"]["p50_ms"], out["fresh"]["latency"]["p50_ms"]),
            "first_request_ms": {k: v["first_request_ms"] for k, v in out.items()},
        }

    def scenario_memory(self) -> None:
        if self.server is None or self.server.pid is None:
            return
        # Open --memory-accounts accounts (1,000,000); touch as many as fit in --memory-seconds over HTTP,
        # then every one of them in a process built like a worker; and keep the run in budget.
        seconds = self.args.memory_seconds
        left = TIME_BUDGET_S - (time.monotonic() - self.started) - VERIFY_RESERVE_S
        if left < seconds:
            seconds = max(5.0, left)
            log(f"  shortening the touching to {seconds:.0f} s to stay within the time budget")
        n = self.args.memory_accounts
        users = [f"mem-{k}" for k in range(n)]
        log(f"scenario 8: memory; opening {n:,} accounts (the domain's Opened events, written with COPY)")
        created = copy_open(self.database_url, users)
        log(f"  opened {n:,} accounts in {created['seconds']} s; the projection follows in the background")
        log(f"  touching them over HTTP for at most {seconds:g} s (debits each account refuses: 402)")
        requests = self.requests
        server_pid = self.server.pid
        pending = iter(users)
        sent = {"n": 0}
        samples: list[dict[str, Any]] = []
        before = procs.tree_rss_kib(server_pid)
        deadline = time.monotonic() + seconds

        def touch() -> bytes | None:
            # Every account is new to the server: loading it is the touch; the debit is refused (no
            # credits), so nothing is written and the run measures the cache, not the write path.
            user = next(pending, None)
            if user is None or time.monotonic() > deadline:
                return None
            sent["n"] += 1
            return requests.debit(user.encode(), 1_000)

        async def sample() -> None:
            started = time.perf_counter()
            while True:
                tree = procs.tree_rss_kib(server_pid)
                samples.append({"t": round(time.perf_counter() - started, 1), "accounts_touched": sent["n"],
                                "rss_mib": round(sum(tree.values()) / 1024, 1)})  # fmt: skip
                await asyncio.sleep(2)

        result = self.load(lambda s: _Drain(s, touch, 402), warmup_s=0, duration_s=None, extra=sample)
        after = procs.tree_rss_kib(server_pid)
        total_before, total_after = sum(before.values()) / 1024, sum(after.values()) / 1024
        samples.append({"t": round(result.seconds, 1), "accounts_touched": sent["n"], "rss_mib": round(total_after, 1)})
        record = self.record("8", "memory: touch new accounts (402s)", result)
        log(f"  then all {n:,} in one process built like a server worker (python -m bench.touch)")
        worker = self.touch_in_worker_process(n)
        touched = result.stats.ok
        half = [x for x in samples if x["t"] >= result.seconds / 2]
        slope = None
        if len(half) >= 2 and half[-1]["accounts_touched"] > half[0]["accounts_touched"]:
            slope = (half[-1]["rss_mib"] - half[0]["rss_mib"]) / (
                half[-1]["accounts_touched"] - half[0]["accounts_touched"]
            )
        accounts_in_database = self.args.accounts + 2 + n
        maxsize = int(os.environ.get("LEDGER_CACHE_MAXSIZE", "10000"))
        # Each account is touched once, by one worker: the caches are surely full once every worker
        # has loaded more distinct accounts than its bound. Only then says the slope anything about 1M.
        caches_full = touched >= maxsize * max(1, self.args.workers)
        record["memory"] = {
            "accounts_opened_for_this_step": n,
            "open": created,
            "accounts_touched_in_this_step": touched,
            "accounts_touched_in_run": touched + self.args.accounts + 2,
            "accounts_in_database": accounts_in_database,
            "cache_maxsize_per_process": maxsize,
            "caches_surely_full": caches_full,
            "server_processes": len(after),
            "rss_before_mib": round(total_before, 1),
            "rss_after_mib": round(total_after, 1),
            "rss_before_per_process_mib": {str(p): round(v / 1024, 1) for p, v in before.items()},
            "rss_after_per_process_mib": {str(p): round(v / 1024, 1) for p, v in after.items()},
            "slope_mib_per_1000_accounts_second_half": None if slope is None else round(slope * 1000, 3),
            "extrapolated_rss_at_1m_touched_mib": None
            if slope is None or not caches_full
            else round(total_after + slope * max(0, 1_000_000 - touched - self.args.accounts), 1),
            "samples": samples,
            "worker_process": worker,
        }
        log(f"  touched {touched:,} new accounts over HTTP; server RSS {total_before:.0f} -> {total_after:.0f} MiB")
        if "rss_end_mib" in worker:
            log(
                f"  worker-built process: {worker['accounts_touched']:,} accounts in {worker['seconds']} s;"
                f" RSS {worker['rss_start_mib']} -> {worker['rss_end_mib']} MiB (peak {worker['rss_peak_mib']})"
            )

    def touch_in_worker_process(self, count: int) -> dict[str, Any]:
        """Scenario 8's million: ``bench.touch`` loads every account as the group-commit writer does."""
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.touch", "mem-", str(count)],
                env=self.env(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.result["failures"].append("bench.touch did not finish in 300 s")
            return {"error": "timed out"}
        if done.returncode != 0:
            self.result["failures"].append(f"bench.touch exited {done.returncode}")
            return {"error": done.stderr[-2000:]}
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def verify(self) -> None:
        log("stopping the server; waiting for the projection, then ledger verify")
        if self.server is not None:
            code = self.server.stop()
            self.result["server_exit_code"] = code
        catch_up = self.wait_for_projection(180)
        code, output, seconds = self.ledger_command("verify")
        lines = output.splitlines()
        self.result["verify"] = {"exit_code": code, "seconds": round(seconds, 1), "catch_up": catch_up,
                                 "summary": lines[-1] if lines else "", "output_head": lines[:20]}  # fmt: skip
        if code != 0:
            self.result["failures"].append(f"ledger verify exited {code}: {lines[-1] if lines else ''}")
        log(f"ledger verify: exit {code}, {lines[-1] if lines else ''} ({seconds:.1f} s)")
        counts = self.sql("SELECT count(*), count(DISTINCT originator_id) FROM ledger_events")
        self.result["event_store"] = {"events": counts[0][0], "streams": counts[0][1]}

    # Whole run.

    def run(self) -> int:
        try:
            self.setup()
            chain_cost.prepare(self)
            self.pgbench()
            self.build_history()
            self.start_services()
            self.mint()
            self.configure_and_fund()
            self.scenarios_http()
            chain_cost.run(self, window_s=self.args.duration / 2, warmup_s=self.args.warmup)
            lots_cost.run(self, window_s=self.args.duration / 2, warmup_s=self.args.warmup)
            self.scenario_history()
            self.scenario_memory()
            self.verify()
        except BaseException as error:  # noqa: BLE001 - report whatever stopped the run, then clean up
            self.result["failures"].append(f"run stopped: {type(error).__name__}: {error}")
            log(f"run stopped: {type(error).__name__}: {error}")
            for service in (self.server, self.projector):
                if service is not None:
                    self.result.setdefault("logs", {})[service.name] = service.log_tail(40)
        finally:
            self.stop_services()
        self.result["total_seconds"] = round(time.monotonic() - self.started, 1)
        self.finish()
        return 1 if self.result["failures"] else 0

    def run_alone(self, scenario: Callable[[], Any], *, before_services: Callable[[], Any] | None = None) -> int:
        """One scenario on its own: reset, migrate, seed, fund, the scenario, ``ledger verify``, the table."""
        try:
            self.setup()
            if before_services is not None:
                before_services()
            self.start_services()
            self.mint()
            self.configure_and_fund()
            scenario()
            self.verify()
        except BaseException as error:  # noqa: BLE001 - report whatever stopped the run, then clean up.
            self.result["failures"].append(f"run stopped: {type(error).__name__}: {error}")
        finally:
            self.stop_services()
        self.result["total_seconds"] = round(time.monotonic() - self.started, 1)
        self.finish()
        return 1 if self.result["failures"] else 0

    def finish(self) -> None:
        self.scenarios.sort(key=lambda s: ORDER.index(s["id"]) if s["id"] in ORDER else len(ORDER))
        by_id = {s["id"]: s for s in self.scenarios}
        noop, raw, debits = by_id.get("1"), by_id.get("2"), by_id.get("3")
        ratios = {
            "debits_to_http_noop": _ratio(debits and debits["rate_per_s"], noop and noop["rate_per_s"]),
            "debits_to_pgbench": _ratio(debits and debits["rate_per_s"], raw and raw["rate_per_s"]),
        }
        self.result["ratios"] = ratios
        text = self.render()
        self.result["table"] = text
        print(text)
        write_json(self.args.out, self.result)
        print(f"\nJSON: {self.args.out}")
        print(f"logs: {self.logs}")

    def render(self) -> str:
        r = self.result
        title = (
            f"ledger benchmark {r['date']}  ({r['machine']['cpus']} cores; server --workers {self.args.workers};"
            f" {self.args.connections} connections; {self.args.duration:g} s per scenario after"
            f" {self.args.warmup:g} s warm-up; {self.args.accounts:,} accounts)"
        )
        lines = [
            title,
            "",
            table(self.scenarios),
            "",
        ]
        ratios = r["ratios"]
        lines.append(f"ratio 3/1 (debits / HTTP no-op):  {_show(ratios['debits_to_http_noop'])}")
        lines.append(f"ratio 3/2 (debits / raw pgbench): {_show(ratios['debits_to_pgbench'])}")
        by_id = {s["id"]: s for s in self.scenarios}
        lines.extend(cpu_per_debit_lines(by_id))
        lines.extend(wal.summary_lines(by_id, ("3", "3p", "3s")))
        if "5" in by_id:
            steps = by_id["5"].get("steps", {})
            lines.append(
                f"5: {by_id['5'].get('requests_per_s', 0):,.0f} requests/s; reserve p50/p99"
                f" {_p(steps.get('reserve'))}, settle p50/p99 {_p(steps.get('settle'))} ms"
            )
        history = r.get("history_build")
        if history:
            lines.append(
                f"7: {history['events']:,}-event account written in {history['build_seconds']} s"
                f" ({history['events_per_second']:,} events/s, {history['transactions']} transactions);"
                f" cold load from snapshot {history.get(f'cold_load_ms[{self.long_user}]')} ms"
                f" vs fresh {history.get(f'cold_load_ms[{self.fresh_user}]')} ms;"
                f" full replay without snapshots {history.get(f'replay_without_snapshot_ms[{self.long_user}]')} ms"
            )
        compare = r.get("history_compare")
        if compare:
            first = compare["first_request_ms"]
            lines.append(
                f"7: first HTTP debit (server cache cold): long {_ms(first.get('long'))}, fresh"
                f" {_ms(first.get('fresh'))}; p50 ratio long/fresh {_show(compare['p50_ratio_long_to_fresh'])}"
            )
        memory = by_id.get("8", {}).get("memory")
        if memory:
            lines.append(
                f"8: over HTTP, touched {memory['accounts_touched_in_this_step']:,} new accounts"
                f" (+{self.args.accounts:,} funded ones earlier; {memory['accounts_in_database']:,} in the database):"
                f" server RSS {memory['rss_before_mib']} -> {memory['rss_after_mib']} MiB over"
                f" {memory['server_processes']} process(es); second-half slope"
                f" {memory['slope_mib_per_1000_accounts_second_half']} MiB per 1,000 accounts"
                f" (cache bound {memory['cache_maxsize_per_process']:,} accounts per process)"
            )
            worker = memory.get("worker_process", {})
            if "rss_end_mib" in worker:
                lines.append(
                    f"8: in one process built like a server worker, loaded as the writer loads them:"
                    f" {worker['accounts_touched']:,} accounts in {worker['seconds']} s, RSS"
                    f" {worker['rss_start_mib']} -> {worker['rss_end_mib']} MiB (peak {worker['rss_peak_mib']});"
                    f" {worker['accounts_in_cache_at_end']:,} in its cache at the end"
                )
        lines.extend(chain_cost.summary_lines(r))
        lines.extend(lots_cost.summary_lines(r))
        funding = self.result.get("funding")
        if funding and "accounts" in funding:
            lines.append(
                f"setup: funded {funding['accounts']:,} accounts via the Python API in {funding['seconds']} s"
                f" ({funding['events_per_second']:,} events/s)"
            )
        funding = by_id.get("0")
        if funding:
            lines.append(
                f"0: funding {funding['ok']:,} accounts over HTTP took {funding['seconds']} s"
                f" ({funding['rate_per_s']:,.0f}/s)"
            )
        verify = r.get("verify")
        if verify:
            lines.append(f"ledger verify: exit {verify['exit_code']}, {verify['summary']} ({verify['seconds']} s)")
        store = r.get("event_store")
        if store:
            lines.append(f"event store at the end: {store['events']:,} events in {store['streams']:,} streams")
        lines.append(f"total run time: {r.get('total_seconds')} s")
        lines.extend(_profile_lines(self.scenarios))
        lines.extend(f"FAILURE: {failure}" for failure in r["failures"])
        lines += ["", legend()]
        return "\n".join(lines)


class _Drain(Repeat):
    """Send requests until ``make`` returns None (a fixed list), then close."""

    def first(self) -> bytes | None:
        return self.make()

    def next(self, status: int, body: bytes, sent_ns: int, done_ns: int) -> bytes | None:
        self.stats.record(ok=status in self.expect, status=status, sent_ns=sent_ns, done_ns=done_ns, body=body)
        return self.make()


def cpu_per_debit(record: dict[str, Any]) -> dict[str, float] | None:
    """Milliseconds of CPU per successful request in one row, by group of processes, and in all."""
    cpu, ok = record.get("cpu") or {}, record.get("ok") or 0
    if not cpu or not ok:
        return None
    per = {name: round(10 * cpu.get(name, 0.0) * record["seconds"] / ok, 3) for name in CPU_GROUPS}
    per["all"] = round(10 * cpu.get("machine_busy", 0.0) * record["seconds"] / ok, 3)
    return per


def cpu_per_debit_lines(by_id: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for scenario_id in ("3", "3p", "3h", "3s"):
        record = by_id.get(scenario_id)
        per = cpu_per_debit(record) if record else None
        if record is None or per is None:
            continue
        record["cpu_ms_per_request"] = per
        parts = ", ".join(f"{label} {per[name]}" for name, label in CPU_GROUPS.items())
        lines.append(f"{scenario_id}: CPU per debit, ms: {parts}; whole machine {per['all']}")
    return lines


def _profile_lines(scenarios: list[dict[str, Any]]) -> list[str]:
    lines = []
    for scenario in scenarios:
        for role, summary in (scenario.get("profile") or {}).items():
            if not summary.get("samples"):
                continue
            lines.append(f"profile {scenario['id']} {role} ({summary['samples']:,} samples): self "
                         + "; ".join(f"{pct}% {frame}" for frame, pct in summary["self_percent"][:5]))  # fmt: skip
            lines.append(
                "    inclusive " + "; ".join(f"{pct}% {frame}" for frame, pct in summary["inclusive_percent"][:8])
            )
            lines.append("    by piece " + "; ".join(f"{pct}% {piece}" for piece, pct in summary["pieces_percent"]))
    return ["", *lines] if lines else []


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _p(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return f"{summary['p50_ms']}/{summary['p99_ms']}"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per scenario (20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each (2)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections / pgbench clients (64)")
    parser.add_argument("--accounts", type=int, default=10_000, help="funded accounts (10,000)")
    # One worker, as `ledger serve` defaults to: on 2 cores, two workers' writers contend for the event table's
    # lock and leave less CPU to PostgreSQL and the projector (measured: fewer debits a second, a longer tail).
    parser.add_argument("--workers", type=int, default=1, help="ledger serve --workers (1)")
    parser.add_argument("--history-events", type=int, default=100_000, help="events of the long account (100,000)")
    parser.add_argument("--sequential", type=int, default=200, help="sequential debits per account in 7 (200)")
    parser.add_argument("--memory-seconds", type=float, default=40.0, help="most seconds of touching accounts (40)")
    parser.add_argument(
        "--memory-accounts", type=int, default=1_000_000, help="accounts opened and touched in 8 (1,000,000)"
    )
    parser.add_argument("--fund-via", choices=("api", "http"), default="api", help="how to fund the accounts (api)")
    parser.add_argument("--quick", action="store_true", help="a short trial: 3 s scenarios, 1,000 accounts")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy in 1, 3-6")
    parser.add_argument("--py-spy", help="the py-spy binary for --profile (default: found on PATH)")
    parser.add_argument(
        "--only",
        choices=("dashboard",),
        help="run one scenario on a database of its own instead: dashboard = 9, the admin page (bench/dashboard.py)",
    )
    parser.add_argument("--dashboard-accounts", type=int, default=100_000, help="accounts of scenario 9 (100,000)")
    parser.add_argument("--dashboard-requests", type=int, default=200, help="sequential page requests in 9 (200)")
    parser.add_argument(
        "--dashboard-reuse", action="store_true", help="measure 9 again on the database a run of it filled"
    )
    parser.add_argument("--database", default="bench")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "latest.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.accounts = 3.0, 1.0, 1_000
        args.history_events, args.sequential, args.memory_seconds = 10_000, 50, 5.0
        args.memory_accounts = 5_000
        if args.out == BENCH_DIR / "results" / "latest.json":
            args.out = BENCH_DIR / "results" / "quick.json"
    if args.only == "dashboard":
        if args.database == "bench":
            args.database = "bench_dashboard"
        if args.out == BENCH_DIR / "results" / "latest.json":
            args.out = BENCH_DIR / "results" / "dashboard.json"
    if args.profile and not args.py_spy:
        args.py_spy = shutil.which("py-spy")
        if args.py_spy is None:
            parser.error("--profile needs py-spy on PATH or --py-spy PATH (it is not a project dependency)")
    if not args.profile:
        args.py_spy = None
    args.admin_url = f"postgresql://{args.pg_user}@{HOST}:{args.pg_port}/postgres"
    args.database_url = f"postgresql://{args.pg_user}@{HOST}:{args.pg_port}/{args.database}"
    return args


def main(argv: list[str] | None = None) -> int:
    bench = Bench(parse(argv))

    def interrupted(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    if bench.args.only == "dashboard":
        return dashboard.run(
            bench,
            host=HOST,
            accounts=bench.args.dashboard_accounts,
            requests=bench.args.dashboard_requests,
            reuse=bench.args.dashboard_reuse,
            log=log,
        )
    return bench.run()


if __name__ == "__main__":
    sys.exit(main())
