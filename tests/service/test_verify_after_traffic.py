"""`ledger verify` on a database filled through the whole HTTP surface: usage, holds that expire, admin
adjustments, purchases, refunds and disputes. The views and the events agree, and verify exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.gateway.server import SECRET, running
from tests.gateway.test_stripe import buy, deliver
from tests.stripe_fake import FakeStripe


def test_verify_finds_no_difference_after_mixed_traffic(clean_database: str, fake_stripe: FakeStripe) -> None:
    for gateway in running(
        clean_database,
        STRIPE_SECRET_KEY="sk_test_ledger",
        STRIPE_WEBHOOK_SECRET=fake_stripe.webhook_secret,
        STRIPE_API_BASE=fake_stripe.api_base,
    ):
        admin, service = gateway.client("admin", "ops"), gateway.client("service", "svc")
        buyer = gateway.client("user", "buyer")
        for n in range(10):
            user = f"user-{n}"
            admin.post(
                "/api/admin/credits/adjust",
                json={"user_id": user, "amount_millicredits": 200_000 + n, "reason": "seed"},
                headers={"Idempotency-Key": f"seed-{n}"},
            )
            service.post(
                "/api/usage/debits",
                json={"user_id": user, "tokens": 1_000 * n + 1},
                headers={"Idempotency-Key": f"d-{n}"},
            )
            hold = service.post(
                "/api/usage/reservations",
                json={"user_id": user, "estimated_tokens": 5_000, "ttl_seconds": 60},
                headers={"Idempotency-Key": f"r-{n}"},
            ).json()
            if n % 3 == 0:
                service.post(
                    f"/api/usage/reservations/{hold['reservation_id']}/settle",
                    json={"tokens": 7_000},
                    headers={"Idempotency-Key": f"s-{n}"},
                )
            elif n % 3 == 1:
                service.post(
                    f"/api/usage/reservations/{hold['reservation_id']}/release", headers={"Idempotency-Key": f"l-{n}"}
                )
        paid, disputed = buy(buyer, key="a"), buy(buyer, key="b")
        for session in (paid, disputed):
            deliver(gateway, fake_stripe, fake_stripe.complete_with_card(session))
        deliver(gateway, fake_stripe, fake_stripe.refund(paid, 1_234))
        deliver(gateway, fake_stripe, fake_stripe.open_dispute(disputed))
        gateway.clock.advance(seconds=120)  # The remaining holds expire; the sweeper records it.
        deadline = time.monotonic() + 20
        while gateway.rows("SELECT count(*) FROM credit_holds")[0][0]:
            assert time.monotonic() < deadline, "the sweeper did not record the expiries"
            time.sleep(0.1)
        head = gateway.rows("SELECT max(notification_id) FROM ledger_events")[0][0]
        while gateway.rows("SELECT min(position) FROM projection_positions")[0][0] < head:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "STRIPE_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        LEDGER_DATABASE_URL=clean_database,
        LEDGER_JWT_SECRET=SECRET,
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "0 difference(s)")
