"""Scenario 9: the admin dashboard page with 100,000 accounts and 1,000,000 events.

``python3 -m uv run python -m bench.run --only dashboard`` resets the database ``bench_dashboard``, writes
100,000 accounts of ten events each (opened, granted, eight debits spread over the last 30 days, half of
them in an analysis) with COPY, as scenario 8 writes its million accounts, lets ``ledger project`` build
the views from them, signs in as an admin through ``POST /login`` and then asks for ``GET /admin/credits``
with that session cookie, one request at a time. Reported: p50/p95/p99 of the page against the target of
200 ms at p95, and how long the data took to write and to project. The result goes to
``bench/results/dashboard.json``.
"""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg

from bench.history import BUILD_SETTINGS
from bench.loadgen import Latencies
from bench.report import write_json
from gateway.cli import mint_token
from ledger.account import CreditAccount

TARGET_P95_MS = 200.0
DEBITS_PER_ACCOUNT = 8
# Enough for the eight debits (at most 20,499 tokens each), and a total that fits the views' bigint sums.
GRANT_MILLICREDITS = 300_000
WINDOW = timedelta(days=30)
_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


def write_accounts(database_url: str, accounts: int, *, per_copy: int = 10_000) -> dict[str, Any]:
    """Each account's own events, made by the domain and encoded by the ledger's mapper, written with COPY
    under the event table's lock (as the recorder takes it, so the projector sees them in order)."""
    from eventsourcing.persistence import JSONTranscoder  # noqa: PLC0415

    from ledger.mapper import MsgspecMapper  # noqa: PLC0415

    mapper = MsgspecMapper(transcoder=JSONTranscoder())
    started = time.perf_counter()
    now = datetime.now(UTC)
    first_day = now - WINDOW + timedelta(minutes=5)
    step = (WINDOW - timedelta(minutes=10)) / DEBITS_PER_ACCOUNT
    events = 0
    with psycopg.connect(database_url) as conn:
        for first in range(0, accounts, per_copy):
            rows = []
            for n in range(first, min(first + per_copy, accounts)):
                user = f"user-{n:06d}"
                opened = first_day - timedelta(hours=1)
                account = CreditAccount.open(user, opened)
                account.grant(
                    grant_id=f"grant-{user}",
                    amount_millicredits=GRANT_MILLICREDITS,
                    source="admin",
                    reference=None,
                    description="bench",
                    granted_by="bench",
                    now=opened,
                )
                # Each account's debits are spread over the month, shifted by the account so the hours fill.
                offset = timedelta(seconds=(n * 37) % int(step.total_seconds()))
                for k in range(DEBITS_PER_ACCOUNT):
                    account.debit(
                        debit_id=f"debit-{user}-{k}",
                        tokens=500 + (n * 7 + k * 13) % 20_000,
                        input_tokens=None,
                        output_tokens=None,
                        model="bench",
                        agent_id=None,
                        analysis_id=f"analysis-{user}-{k // 2}" if n % 2 == 0 else None,
                        occurred_at=None,
                        settings=BUILD_SETTINGS,
                        now=first_day + k * step + offset,
                    )
                for event in account.collect_events():
                    stored = mapper.to_stored_event(event)
                    rows.append((stored.originator_id, stored.originator_version, stored.topic, stored.state))
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
                columns = "originator_id, originator_version, topic, state"
                with cur.copy(f"COPY ledger_events ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute("NOTIFY ledger_events")
            events += len(rows)
    seconds = time.perf_counter() - started
    return {"accounts": accounts, "events": events, "seconds": round(seconds, 1),
            "events_per_second": round(events / seconds)}  # fmt: skip


def _cookie(response: http.client.HTTPResponse, name: str) -> str:
    for header, value in response.getheaders():
        if header.lower() == "set-cookie" and value.startswith(f"{name}="):
            return value.split(";", 1)[0].split("=", 1)[1]
    raise SystemExit(f"no {name} cookie in the answer ({response.status})")


def session_cookie(host: str, port: int, token: str) -> str:
    """Sign in as a browser does: the form's CSRF cookie and field, then the token."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", "/login")
        form = connection.getresponse()
        page = form.read().decode()
        csrf_cookie = _cookie(form, "ledger_csrf")
        found = _CSRF.search(page)
        if found is None:
            raise SystemExit("the sign-in page has no CSRF field")
        body = urlencode({"token": token, "_csrf_token": found[1]})
        connection.request(
            "POST",
            "/login",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"ledger_csrf={csrf_cookie}"},
        )
        answer = connection.getresponse()
        answer.read()
        if answer.status != 303:
            raise SystemExit(f"POST /login answered {answer.status}")
        return _cookie(answer, "ledger_session")
    finally:
        connection.close()


def measure(host: str, port: int, cookie: str, *, requests: int, warmup: int) -> dict[str, Any]:
    """Sequential GET /admin/credits on one keep-alive connection, from the request to the last byte."""
    latencies = Latencies(requests)
    statuses: dict[int, int] = {}
    size = 0
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Cookie": f"ledger_session={cookie}", "Accept-Language": "en"}
    try:
        for n in range(warmup + requests):
            started = time.perf_counter_ns()
            connection.request("GET", "/admin/credits", headers=headers)
            response = connection.getresponse()
            body = response.read()
            done = time.perf_counter_ns()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status != 200 or b'data-figure="credits_in_circulation_millicredits"' not in body:
                raise SystemExit(f"GET /admin/credits answered {response.status}: {body[:300]!r}")
            if n >= warmup:
                latencies.add(done - started)
                size = len(body)
    finally:
        connection.close()
    summary = latencies.summary()
    ordered = sorted(latencies.values[: latencies.count])
    # Nearest rank, as the other percentiles.
    summary["p95_ms"] = round(ordered[max(0, -(-95 * len(ordered) // 100) - 1)] / 1e6, 3)
    return {"latency": summary, "statuses": statuses, "page_bytes": size}


def _events(bench: Any) -> int:
    try:
        return int(bench.sql("SELECT count(*) FROM ledger_events")[0][0])
    except psycopg.Error:
        return 0


def run(bench: Any, *, host: str, accounts: int, requests: int, reuse: bool, log: Callable[[str], None]) -> int:
    """Scenario 9 on a ``bench.run.Bench`` set up for its own database.

    With ``reuse``, a database this scenario filled before is measured again as it is (to compare a change).
    """
    try:
        wanted = accounts * (2 + DEBITS_PER_ACCOUNT)
        if reuse and _events(bench) >= wanted:
            code, output, _ = bench.ledger_command("migrate")
            log(f"reusing {bench.args.database}: {_events(bench):,} events; ledger migrate: {output} ({code})")
            written: dict[str, Any] = {"accounts": accounts, "events": wanted, "reused": True}
        else:
            bench.setup()
            log(f"writing {accounts:,} accounts x {2 + DEBITS_PER_ACCOUNT} events with COPY")
            written = write_accounts(bench.database_url, accounts)
            log(f"  {written['events']:,} events in {written['seconds']} s ({written['events_per_second']:,}/s)")
        bench.start_services()
        log("waiting for ledger project to build the views")
        caught_up = bench.wait_for_projection(900)
        log(f"  caught up in {caught_up['catch_up_seconds']} s (lag {caught_up['lag_events_after']})")
        bench.sql("VACUUM ANALYZE")
        token = mint_token(bench.secret, role="admin", sub="bench-admin", ttl_seconds=3600)
        cookie = session_cookie(host, bench.port, token)
        log(f"GET /admin/credits: {requests} sequential requests after 10 unmeasured")
        measured = measure(host, bench.port, cookie, requests=requests, warmup=10)
        latency = measured["latency"]
        ok = latency["p95_ms"] < TARGET_P95_MS
        log(f"  p50 {latency['p50_ms']} ms, p95 {latency['p95_ms']} ms, p99 {latency['p99_ms']} ms, max"
            f" {latency['max_ms']} ms ({measured['page_bytes']:,} bytes): {'meets' if ok else 'MISSES'} the target"
            f" of {TARGET_P95_MS:g} ms at p95")  # fmt: skip
        counts = bench.sql("SELECT count(*), count(DISTINCT originator_id) FROM ledger_events")
        bench.result.update(
            scenario="9: the dashboard page, 100,000 accounts and 1,000,000 events",
            data=written,
            projection=caught_up,
            event_store={"events": counts[0][0], "streams": counts[0][1]},
            dashboard=measured,
            target_p95_ms=TARGET_P95_MS,
            meets_target=ok,
        )
        if not ok:
            bench.result["failures"].append(f"dashboard p95 {latency['p95_ms']} ms >= {TARGET_P95_MS:g} ms")
    finally:
        bench.stop_services()
    write_json(bench.args.out, bench.result)
    print(f"JSON: {bench.args.out}")
    return 1 if bench.result["failures"] else 0
