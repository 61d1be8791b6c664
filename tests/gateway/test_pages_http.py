"""The pages over plain HTTP, against a real gateway: sign-in, sessions, CSRF, roles and redirects, and that
the forms run the API's own commands with the API's rules. These run without a browser.

A session comes from ``POST /login`` with a token, as a person's browser gets it; the client then sends its
cookies back like a browser on the same site would.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import jwt
import pytest

from gateway.cli import mint_token
from tests.gateway.server import SECRET, Gateway, private_database, running
from tests.stripe_fake import FakeStripe

ADMIN_PAGES = (
    "/admin/credits",
    "/admin/credits/live",
    "/admin/credits/users",
    "/admin/credits/users/someone",
    "/admin/billing-config",
    "/admin/packages",
)
USER_PAGES = ("/credits", "/credits/history")
FORM_POSTS = (
    ("/admin/credits/adjust", {"user_id": "csrf-victim", "amount": "5", "reason": "forged"}),
    ("/admin/billing-config", {"welcome_credits": "7", "was_welcome_credits": "0"}),
    ("/admin/packages", {"id": "forged", "name": "Forged", "credits": "1", "price": "1.00", "currency": "BRL"}),
    ("/admin/packages/starter", {"name": "Forged", "credits": "100", "price": "30.00"}),
    ("/credits/buy", {"package_id": "starter"}),
    ("/logout", {}),
)
_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')
_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


@pytest.fixture(scope="module")
def gateway(database_url: str, fake_stripe_server: FakeStripe) -> Iterator[Gateway]:
    with private_database(database_url, f"ledger_pages_http_{os.getpid()}") as url:
        yield from running(
            url,
            STRIPE_SECRET_KEY="sk_test_ledger",
            STRIPE_WEBHOOK_SECRET=fake_stripe_server.webhook_secret,
            STRIPE_API_BASE=fake_stripe_server.api_base,
        )


def browser_like(gateway: Gateway, locale: str = "en") -> httpx.Client:
    return httpx.Client(base_url=gateway.base_url, timeout=30, headers={"Accept-Language": locale})


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, "the page has no CSRF field"
    return html.unescape(found[1])


def key_of(page: httpx.Response) -> str:
    found = _KEY.search(page.text)
    assert found, "the page has no idempotency key"
    return found[1]


def sign_in(gateway: Gateway, role: str, sub: str, *, ttl_seconds: int = 600, locale: str = "en") -> httpx.Client:
    client = browser_like(gateway, locale)
    form = client.get("/login")
    token = mint_token(SECRET, role=role, sub=sub, ttl_seconds=ttl_seconds)
    answer = client.post("/login", data={"token": token, "_csrf_token": csrf_of(form)})
    assert answer.status_code == 303, answer.text
    return client


def post_form(client: httpx.Client, page_path: str, action: str, fields: dict[str, str]) -> httpx.Response:
    """Send a form as the page renders it: its CSRF token and idempotency key, with these fields."""
    shown = client.get(page_path)
    assert shown.status_code == 200, shown.text
    data = {"_csrf_token": csrf_of(shown), **fields}
    if "idempotency_key" not in fields and _KEY.search(shown.text):
        data["idempotency_key"] = key_of(shown)
    return client.post(action, data=data)


def set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    jar = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        jar.update(dict.fromkeys(cookie, cookie))
    return jar


def wait_for_views(gateway: Gateway) -> None:
    head = gateway.events()
    deadline = time.monotonic() + 10
    while gateway.rows("SELECT min(position) FROM projection_positions")[0][0] < head:
        assert time.monotonic() < deadline, "the views did not catch up"
        time.sleep(0.01)


def figures_of(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([^"]+)" data-value="([^"]*)"', page))


# Signing in.


def test_the_sign_in_page_needs_no_session(gateway: Gateway) -> None:
    form = browser_like(gateway).get("/login")
    assert form.status_code == 200
    assert '<input id="token" name="token"' in form.text
    assert '<label for="token">' in form.text
    csrf = set_cookies(form)["ledger_csrf"]["ledger_csrf"]
    assert csrf["httponly"]
    assert csrf["samesite"].lower() == "strict"


@pytest.mark.parametrize(("role", "home"), [("admin", "/admin/credits"), ("user", "/credits")])
def test_a_token_signs_in_to_the_roles_page_with_a_strict_cookie_no_longer_than_the_token(
    gateway: Gateway, role: str, home: str
) -> None:
    client = browser_like(gateway)
    form = client.get("/login")
    token = mint_token(SECRET, role=role, sub=f"signer-{role}", ttl_seconds=300)
    answer = client.post("/login", data={"token": token, "_csrf_token": csrf_of(form)})
    assert (answer.status_code, answer.headers["location"]) == (303, home)
    session = set_cookies(answer)["ledger_session"]["ledger_session"]
    assert session["httponly"]
    assert session["samesite"].lower() == "strict"
    assert session["path"] == "/"
    assert not session["secure"]  # LEDGER_PUBLIC_URL is http here.
    assert 0 < int(session["max-age"]) <= 300
    assert client.get(home).status_code == 200


def test_the_session_cookie_is_secure_when_the_public_url_is_https(
    database_url: str, fake_stripe_server: FakeStripe
) -> None:
    with private_database(database_url, f"ledger_pages_https_{os.getpid()}") as url:
        for secure in running(url, LEDGER_PUBLIC_URL="https://ledger.example"):
            client = browser_like(secure)
            form = client.get("/login")
            csrf = set_cookies(form)["ledger_csrf"]["ledger_csrf"]
            assert csrf["secure"]
            # The test speaks plain HTTP to the server behind the https address, so it sends the cookie itself.
            token = mint_token(SECRET, role="admin", sub="ops", ttl_seconds=60)
            answer = client.post(
                "/login",
                data={"token": token, "_csrf_token": csrf_of(form)},
                headers={"Cookie": f"ledger_csrf={csrf.value}"},
            )
            assert answer.status_code == 303
            assert set_cookies(answer)["ledger_session"]["ledger_session"]["secure"]


def _token(**claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "someone", "role": "admin", "iat": now, "exp": now + 600, **claims}, SECRET)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "Paste a token"),
        ("not-a-jwt", "This is not a token"),
        (_token(exp=int(time.time()) - 60), "This token has expired"),
        (jwt.encode({"sub": "x", "role": "admin", "exp": int(time.time()) + 60}, "x" * 40), "not signed with"),
        (_token(role="service"), "Service tokens are for the API"),
        (_token(role="root"), "role is unknown"),
        (jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, SECRET), "lacks sub, role or exp"),
    ],
    ids=["empty", "malformed", "expired", "other-secret", "service", "unknown-role", "no-role"],
)
def test_a_bad_token_is_the_form_again_with_401_and_the_reason(gateway: Gateway, token: str, reason: str) -> None:
    client = browser_like(gateway)
    form = client.get("/login")
    answer = client.post("/login", data={"token": token, "_csrf_token": csrf_of(form)})
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert reason in html.unescape(answer.text)
    assert '<input id="token" name="token"' in answer.text
    assert "ledger_session" not in set_cookies(answer)


def test_signing_in_without_the_forms_csrf_token_is_refused(gateway: Gateway) -> None:
    client = browser_like(gateway)
    client.get("/login")
    answer = client.post("/login", data={"token": mint_token(SECRET, role="admin", sub="ops", ttl_seconds=60)})
    assert answer.status_code == 403
    assert "ledger_session" not in set_cookies(answer)


def test_signing_out_ends_the_session(gateway: Gateway) -> None:
    client = sign_in(gateway, "admin", "leaver")
    out = post_form(client, "/admin/credits", "/logout", {})
    assert (out.status_code, out.headers["location"]) == (303, "/login?out=1")
    assert set_cookies(out)["ledger_session"]["ledger_session"]["max-age"] == "0"
    after = client.get("/admin/credits")
    assert (after.status_code, after.headers["location"]) == (303, "/login")
    assert "You are signed out." in client.get("/login?out=1").text


# Who may open what.


@pytest.mark.parametrize("path", [*ADMIN_PAGES, *USER_PAGES, "/credits/stream"])
def test_a_page_without_a_session_redirects_to_sign_in(gateway: Gateway, path: str) -> None:
    answer = browser_like(gateway).get(path)
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")


@pytest.mark.parametrize(
    "cookie",
    ["garbage", "e30.AAAA", "WyJvcHMiLCJhZG1pbiIsOTk5OTk5OTk5OTld.forged-signature"],
    ids=["garbage", "unsigned", "forged"],
)
def test_a_forged_session_cookie_is_no_session(gateway: Gateway, cookie: str) -> None:
    client = browser_like(gateway)
    client.cookies.set("ledger_session", cookie)
    answer = client.get("/admin/credits")
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_a_user_opening_an_admin_page_gets_403(gateway: Gateway, path: str) -> None:
    answer = sign_in(gateway, "user", "curious").get(path)
    assert answer.status_code == 403
    assert "Not allowed" in answer.text


@pytest.mark.parametrize("path", USER_PAGES)
def test_an_admin_has_no_users_own_page(gateway: Gateway, path: str) -> None:
    assert sign_in(gateway, "admin", "ops").get(path).status_code == 403


def test_the_pages_are_kept_nowhere_and_run_only_the_services_own_files(gateway: Gateway) -> None:
    answer = sign_in(gateway, "admin", "ops").get("/admin/credits")
    assert answer.headers["cache-control"] == "no-store"
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert not re.search(r"<script(?![^>]*\bsrc=\"/static/)", answer.text)  # No inline script.
    assert "https://" not in answer.text


# Forms: CSRF, and the API's commands.


@pytest.mark.parametrize(("action", "fields"), FORM_POSTS, ids=[action for action, _ in FORM_POSTS])
def test_a_post_without_the_pages_csrf_token_is_403_and_changes_nothing(
    gateway: Gateway, action: str, fields: dict[str, str]
) -> None:
    role = "user" if action.startswith("/credits") else "admin"
    client = sign_in(gateway, role, f"victim-{role}")
    before = gateway.events()
    for forged in ({}, {"_csrf_token": "0" * 128}):
        answer = client.post(action, data={**fields, **forged})
        assert answer.status_code == 403, answer.text
    # The session stays: a page still opens, and nothing was written.
    assert client.get("/admin/credits" if role == "admin" else "/credits").status_code == 200
    assert gateway.events() == before


def test_another_sessions_csrf_token_does_not_pass(gateway: Gateway) -> None:
    attacker = sign_in(gateway, "admin", "attacker")
    victim = sign_in(gateway, "admin", "victim")
    token = csrf_of(attacker.get("/admin/credits/users/x"))
    before = gateway.events()
    answer = victim.post(
        "/admin/credits/adjust", data={"_csrf_token": token, "user_id": "x", "amount": "1", "reason": "forged"}
    )
    assert answer.status_code == 403
    assert gateway.events() == before


def test_an_adjustment_is_the_apis_command_and_a_double_submit_applies_once(gateway: Gateway) -> None:
    admin = sign_in(gateway, "admin", "adjuster")
    shown = admin.get("/admin/credits/users/double-submit")
    form = {
        "_csrf_token": csrf_of(shown),
        "idempotency_key": key_of(shown),
        "user_id": "double-submit",
        "amount": "12,5",
        "reason": "support ticket 7",
    }
    first = admin.post("/admin/credits/adjust", data=form)
    second = admin.post("/admin/credits/adjust", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"].startswith("/admin/credits/users/double-submit?done=adjusted&at=")
    page = admin.get(first.headers["location"])
    assert figures_of(page.text)["balance_millicredits"] == "12500"
    assert "The adjustment was applied." in page.text
    history = gateway.rows(
        "SELECT kind, amount_millicredits, description FROM credit_transactions WHERE user_id = 'double-submit'"
    )
    assert history == [("adjustment", 12_500, "support ticket 7")]


@pytest.mark.parametrize(
    ("amount", "reason", "field", "message"),
    [
        ("10", "", "reason", "must be 1 to 500 characters"),
        ("", "why", "amount", "must be a number of credits with at most three decimals"),
        ("1.0001", "why", "amount", "must be a number of credits"),
        ("0", "why", "amount", "must be a non-zero integer"),
        ("-5", "take too much", "amount", "larger than the available balance"),
    ],
    ids=["no-reason", "no-amount", "too-precise", "zero", "overdraw"],
)
def test_a_refused_adjustment_says_why_beside_its_field_and_writes_nothing(
    gateway: Gateway, amount: str, reason: str, field: str, message: str
) -> None:
    admin = sign_in(gateway, "admin", "careful")
    before = gateway.events()
    answer = post_form(
        admin,
        "/admin/credits/users/refused",
        "/admin/credits/adjust",
        {"user_id": "refused", "amount": amount, "reason": reason},
    )
    assert answer.status_code in {409, 422}
    assert f'id="{field}-error"' in answer.text
    assert message in html.unescape(answer.text)
    assert f'id="{field}"' in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert gateway.events() == before


def test_the_dashboard_shows_every_stats_figure_exactly_as_the_api_gives_it(gateway: Gateway) -> None:
    api = gateway.client("admin", "ops")
    api.post(
        "/api/admin/credits/adjust",
        json={"user_id": "figures", "amount_millicredits": 1_234_567, "reason": "figures"},
        headers={"Idempotency-Key": "figures"},
    )
    wait_for_views(gateway)
    stats = api.get("/api/admin/credits/stats").json()
    shown = figures_of(sign_in(gateway, "admin", "ops").get("/admin/credits").text)
    assert set(shown) == set(stats)
    for name, value in stats.items():
        if name != "as_of":
            assert shown[name] == (value if isinstance(value, str) else json.dumps(value)), name
    assert isinstance(stats["credits_in_circulation_millicredits"], int)
    assert re.fullmatch(r"\d+", shown["credits_in_circulation_millicredits"])


def test_the_dashboard_speaks_brazilian_portuguese(gateway: Gateway) -> None:
    page = sign_in(gateway, "admin", "ops", locale="pt-BR,pt;q=0.9").get("/admin/credits")
    assert '<html lang="pt-BR">' in page.text
    assert "Painel de créditos" in page.text
    assert "Créditos em circulação" in page.text


def test_a_billing_config_change_is_the_ledgers_with_its_rules_and_audit_trail(gateway: Gateway) -> None:
    admin = sign_in(gateway, "admin", "configurer")
    shown = admin.get("/admin/billing-config")
    current = dict(re.findall(r'name="was_([a-z_]+)" value="(\d+)"', shown.text))
    fields = dict(current)
    wrong = {**fields, "hourly_token_limit": str(int(current["daily_token_limit"]) + 1)}
    refused = admin.post(
        "/admin/billing-config",
        data={"_csrf_token": csrf_of(shown), "idempotency_key": key_of(shown), **wrong}
        | {f"was_{k}": v for k, v in current.items()},
    )
    assert refused.status_code == 409  # As the API answers: the stored limits do not allow it.
    assert "must not exceed daily_token_limit" in html.unescape(refused.text)
    assert 'id="hourly_token_limit-error"' in refused.text
    letters = post_form(admin, "/admin/billing-config", "/admin/billing-config", {**fields, "welcome_credits": "ten"})
    assert letters.status_code == 422
    assert "must be a whole number" in letters.text

    changed = {**fields, "welcome_credits": str(int(current["welcome_credits"]) + 3)}
    saved = post_form(
        admin, "/admin/billing-config", "/admin/billing-config", changed | {f"was_{k}": v for k, v in current.items()}
    )
    assert saved.status_code == 303
    page = admin.get(saved.headers["location"])
    assert "The settings were saved." in page.text
    row = re.search(r'<tr data-change="welcome_credits">(.*?)</tr>', page.text, re.DOTALL)
    assert row is not None
    assert "configurer" in row[1]
    assert f'data-old="{current["welcome_credits"]}"' in row[1]
    assert f'data-new="{changed["welcome_credits"]}"' in row[1]
    api = gateway.client("admin", "ops").get("/api/admin/billing-config").json()
    assert api["welcome_credits"] == int(changed["welcome_credits"])


def test_packages_are_added_and_changed_through_the_catalogue(gateway: Gateway) -> None:
    admin = sign_in(gateway, "admin", "merchant")
    added = post_form(
        admin,
        "/admin/packages",
        "/admin/packages",
        {"id": "studio", "name": "Studio", "credits": "5000", "price": "1.500,00", "currency": "BRL", "active": "true"},
    )
    assert added.status_code == 422  # Group separators are refused: "1.500" means 1.5 in English.
    added = post_form(
        admin,
        "/admin/packages",
        "/admin/packages",
        {"id": "studio", "name": "Studio", "credits": "5000", "price": "1500,00", "currency": "BRL", "active": "true"},
    )
    assert added.status_code == 303, added.text
    page = admin.get(added.headers["location"])  # As a browser does: the address waits for the write to show.
    changed = post_form(
        admin,
        "/admin/packages",
        "/admin/packages/studio",
        {
            "name": "Studio XL",
            "credits": "5000",
            "price": "1500.00",
            "was_name": "Studio",
            "was_credits": "5000",
            "was_price": "150000",
            "was_active": "true",
        },
    )
    assert changed.status_code == 303, changed.text
    # The page the browser is sent to waits for the change to show in the views the catalogue is read from.
    assert admin.get(changed.headers["location"]).status_code == 200
    catalogue = {
        p["id"]: p for p in gateway.client("admin", "ops").get("/api/admin/credits/packages").json()["packages"]
    }
    assert catalogue["studio"]["name"] == "Studio XL"
    assert catalogue["studio"]["price"] == {"amount_minor": 150_000, "currency": "BRL"}
    assert catalogue["studio"]["active"] is False  # The box was left unticked.
    assert 'data-package="studio"' in page.text


# The user's page.


def test_a_users_page_shows_their_own_account_and_no_one_elses(gateway: Gateway) -> None:
    api = gateway.client("admin", "ops")
    for user, amount in (("page-alice", 7_000), ("page-bob", 9_000)):
        api.post(
            "/api/admin/credits/adjust",
            json={"user_id": user, "amount_millicredits": amount, "reason": f"for {user}"},
            headers={"Idempotency-Key": f"page-{user}"},
        )
    wait_for_views(gateway)
    page = sign_in(gateway, "user", "page-alice").get("/credits")
    assert figures_of(page.text)["balance_millicredits"] == "7000"
    assert "for page-alice" in page.text
    assert "page-bob" not in page.text
    stream = sign_in(gateway, "user", "page-alice")
    with stream.stream("GET", "/credits/stream") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        data = next(line for line in events.iter_lines() if line.startswith("data:"))
    assert json.loads(data.removeprefix("data:"))["balance_millicredits"] == [7_000, "7"]


def test_a_buy_button_opens_the_checkout_once_per_form(gateway: Gateway) -> None:
    buyer = sign_in(gateway, "user", "page-buyer")
    shown = buyer.get("/credits")
    form = {"_csrf_token": csrf_of(shown), "package_id": "starter", "idempotency_key": key_of(shown) + "-1"}
    first = buyer.post("/credits/buy", data=form)
    again = buyer.post("/credits/buy", data=form)
    assert first.status_code == 303, first.text
    assert first.headers["location"].startswith("https://checkout.stripe.com/")
    assert again.headers["location"] == first.headers["location"]
    assert "form-action 'self' https://checkout.stripe.com" in shown.headers["content-security-policy"]
    unknown = buyer.post("/credits/buy", data={**form, "package_id": "nope", "idempotency_key": "other"})
    assert unknown.status_code == 404
    assert "no longer on sale" in unknown.text


# The API is unaffected.


def test_the_api_takes_no_session_and_needs_no_csrf(gateway: Gateway) -> None:
    session = sign_in(gateway, "admin", "ops")
    assert session.get("/api/admin/credits/stats").status_code == 401  # A cookie is not a bearer token.
    api = gateway.client("admin", "ops")
    answer = api.post(
        "/api/admin/credits/adjust",
        json={"user_id": "api-only", "amount_millicredits": 1_000, "reason": "no csrf"},
        headers={"Idempotency-Key": "api-only"},
    )
    assert answer.status_code == 201, answer.text
    assert "set-cookie" not in answer.headers
    assert "set-cookie" not in api.get("/api/admin/credits/stats").headers


def test_the_pages_stay_out_of_the_api_document(gateway: Gateway) -> None:
    paths = gateway.client().get("/schema").json()["paths"]
    pages = ("/login", "/logout", "/credits", "/admin/")
    assert not [path for path in paths if path.startswith(pages)]
