"""The admin dashboard and the user's credits page in a real browser (Debian's chromium through Playwright),
against the real gateway, the real database and the fake Stripe.

An admin signs in with a token, sees the API's figures, adjusts a user and sees the movement, changes the
billing settings and sees the change in the audit trail, and is told why a form without a reason was
refused. A user sees the balance move while a service debits it, with no reload, and buys a package
through the fake Stripe. Sessions, roles and a cross-site form are tried as a browser would. Each page is
photographed at 1280 and 375 px into ``tests/screenshots/`` (ignored by git), and neither width scrolls
sideways.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from gateway.cli import mint_token
from tests.gateway.server import SECRET, Api, Gateway, running
from tests.gateway.test_browser import SCREENSHOTS, Offline
from tests.gateway.test_pages_http import wait_for_views
from tests.gateway.test_stripe import deliver, state
from tests.stripe_fake import FakeStripe

WIDTHS = ({"width": 1280, "height": 800}, {"width": 375, "height": 812})
LIVE_TIMEOUT_MS = 10_000


@pytest.fixture
def gateway(clean_database: str, fake_stripe: FakeStripe) -> Iterator[Gateway]:
    yield from running(
        clean_database,
        STRIPE_SECRET_KEY="sk_test_ledger",
        STRIPE_WEBHOOK_SECRET=fake_stripe.webhook_secret,
        STRIPE_API_BASE=fake_stripe.api_base,
    )


@pytest.fixture
def admin_api(gateway: Gateway) -> Api:
    return gateway.client("admin", "ops")


def new_page(browser: Browser, locale: str = "en-US") -> tuple[BrowserContext, Page, Offline]:
    context = browser.new_context(viewport=WIDTHS[0], locale=locale)
    page = context.new_page()
    return context, page, Offline(page)


def sign_in(page: Page, gateway: Gateway, role: str, sub: str) -> None:
    """Sign in with the keyboard alone: the token pasted into its field, then Enter."""
    page.goto(f"{gateway.base_url}/login")
    page.get_by_label("Token").focus()
    page.keyboard.insert_text(mint_token(SECRET, role=role, sub=sub, ttl_seconds=600))
    with page.expect_navigation():
        page.keyboard.press("Enter")


def photograph(page: Page, name: str) -> None:
    """The page at each width, full length; neither may scroll sideways."""
    SCREENSHOTS.mkdir(exist_ok=True)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for size in WIDTHS:
        page.set_viewport_size(size)
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"], f"{name} scrolls sideways"
        page.screenshot(path=SCREENSHOTS / f"{name}-{size['width']}.png", full_page=True)
    page.set_viewport_size(WIDTHS[0])


def assert_accessible_basics(page: Page) -> None:
    """Every field has a label, the page has one h1 and a main landmark, and the skip link comes first."""
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(field => field.labels.length === 0 && !field.getAttribute('aria-label'))
                .map(field => field.name)"""
    )
    assert unlabelled == []
    expect(page.locator("h1")).to_have_count(1)
    expect(page.locator("main#content")).to_have_count(1)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"


def fund(api: Api, user_id: str, millicredits: int, key: str) -> None:
    answer = api.post(
        "/api/admin/credits/adjust",
        json={"user_id": user_id, "amount_millicredits": millicredits, "reason": "welcome pack"},
        headers={"Idempotency-Key": key},
    )
    assert answer.status_code == 201, answer.text


def use(gateway: Gateway, user_id: str, tokens: int, key: str) -> dict[str, int]:
    answer = gateway.client("service", "analyzer").post(
        "/api/usage/debits",
        json={"user_id": user_id, "tokens": tokens, "analysis_id": key},
        headers={"Idempotency-Key": key},
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, int] = answer.json()
    return body


@pytest.mark.browser
def test_an_admin_sees_the_apis_figures_updating_live(browser: Browser, gateway: Gateway, admin_api: Api) -> None:
    fund(admin_api, "maria", 150_000, "maria")
    fund(admin_api, "joao", 2_500_000, "joao")
    use(gateway, "maria", 42_000, "analysis-1")
    use(gateway, "joao", 310_000, "analysis-2")
    wait_for_views(gateway)
    context, page, offline = new_page(browser)

    page.goto(f"{gateway.base_url}/admin/credits")
    expect(page).to_have_url(f"{gateway.base_url}/login")
    sign_in(page, gateway, "admin", "ops")
    expect(page).to_have_url(f"{gateway.base_url}/admin/credits")
    expect(page.locator("h1")).to_have_text("Credits dashboard")
    stats = admin_api.get("/api/admin/credits/stats").json()
    for name, value in stats.items():
        figure = page.locator(f'[data-figure="{name}"]')
        expect(figure).to_have_count(1)
        if name != "as_of":
            expect(figure).to_have_attribute("data-value", value if isinstance(value, str) else json.dumps(value))
    expect(page.locator('[data-figure="credits_in_circulation_millicredits"]')).to_have_text("2,298 credits")
    expect(page.locator('[data-check="database"]')).to_have_attribute("data-state", "ok")
    expect(page.locator('[data-check="stripe"]')).to_have_attribute("data-state", "configured")
    expect(page.locator('[data-check="projection-accounts"]')).to_have_attribute("data-state", "ok")
    expect(page.locator("[data-alerts=none]")).to_be_visible()
    expect(page.locator("figure.chart svg[role=img]")).to_have_count(2)
    expect(page.locator("table.movements tbody tr")).to_have_count(4)
    assert_accessible_basics(page)
    photograph(page, "admin-dashboard")

    # The latest movements update by themselves: an adjustment made elsewhere appears without a reload.
    page.evaluate("window.notReloaded = true")
    fund(admin_api, "ana", 5_000, "ana")
    expect(page.locator("table.movements tbody tr").first).to_contain_text("ana", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    assert offline.external() == []
    context.close()


@pytest.mark.browser
def test_an_admin_finds_a_user_and_adjusts_the_balance(browser: Browser, gateway: Gateway, admin_api: Api) -> None:
    fund(admin_api, "maria", 150_000, "maria")
    fund(admin_api, "joao", 2_500_000, "joao")
    use(gateway, "maria", 42_000, "analysis-1")
    wait_for_views(gateway)
    context, page, offline = new_page(browser)
    sign_in(page, gateway, "admin", "ops")
    page.get_by_role("link", name="Users").click()
    expect(page.locator("h1")).to_have_text("Users")
    expect(page.locator("table.users tbody tr").first).to_have_attribute("data-user", "joao")
    page.get_by_label("User id starts with").fill("ma")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table.users tbody tr")).to_have_count(1)
    assert_accessible_basics(page)
    photograph(page, "admin-users")
    page.get_by_role("link", name="maria").click()
    expect(page.locator("h1")).to_have_text("User maria")
    expect(page.locator('[data-figure="balance_millicredits"]')).to_have_attribute("data-value", "108000")

    # Without a reason the ledger refuses, and the page says so beside the field; nothing was written.
    before = gateway.events()
    page.get_by_label("Credits to add").fill("25.5")
    page.get_by_role("button", name="Apply the adjustment").click()
    expect(page.locator("#reason-error")).to_have_text("must be 1 to 500 characters")
    expect(page.get_by_label("Reason")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Credits to add")).to_have_value("25.5")
    assert gateway.events() == before

    page.get_by_label("Reason").fill("refund for a failed analysis")
    page.get_by_role("button", name="Apply the adjustment").click()
    expect(page.locator(".notice")).to_have_text("The adjustment was applied.")
    expect(page.locator('[data-figure="balance_millicredits"]')).to_have_attribute("data-value", "133500")
    first = page.locator("table tbody tr[data-movement]").first
    expect(first).to_contain_text("Adjustment")
    expect(first).to_contain_text("+25.5")
    expect(first).to_contain_text("refund for a failed analysis")
    # Each grant is a lot, in the order usage takes them: the usage came out of the first.
    lots = page.locator('[data-section="lots"] tr[data-lot]')
    expect(lots).to_have_count(2)
    expect(lots.nth(0)).to_have_attribute("data-remaining", "108000")
    expect(lots.nth(1)).to_have_attribute("data-remaining", "25500")
    expect(lots.nth(1)).to_contain_text("Promotional")
    assert_accessible_basics(page)
    photograph(page, "admin-user")
    assert offline.external() == []
    context.close()


@pytest.mark.browser
def test_an_admin_changes_the_billing_settings_and_sees_the_audit_trail(
    browser: Browser, gateway: Gateway, admin_api: Api
) -> None:
    context, page, offline = new_page(browser)
    sign_in(page, gateway, "admin", "carla")
    page.get_by_role("link", name="Billing settings").click()
    expect(page.locator("h1")).to_have_text("Billing settings")
    expect(page.locator(".audit")).to_have_count(0)

    # The ledger's own rule, with the API's message: the hourly limit may not pass the daily one.
    page.get_by_label("Hourly token limit").fill("3000000")
    page.get_by_role("button", name="Save the settings").click()
    expect(page.locator("#hourly_token_limit-error")).to_have_text("must not exceed daily_token_limit")
    page.get_by_label("Hourly token limit").fill("500000")

    page.get_by_label("Alert threshold").fill("90")
    page.get_by_label("Welcome credits").fill("25")
    page.get_by_role("button", name="Save the settings").click()
    expect(page.locator(".notice")).to_have_text("The settings were saved.")
    expect(page.get_by_label("Alert threshold")).to_have_value("90")
    threshold = page.locator('tr[data-change="alert_threshold_percent"]')
    expect(threshold).to_contain_text("carla")
    expect(threshold.locator("[data-old]")).to_have_attribute("data-old", "80")
    expect(threshold.locator("[data-new]")).to_have_attribute("data-new", "90")
    expect(page.locator('tr[data-change="welcome_credits"]')).to_contain_text("0 → 25")
    config = admin_api.get("/api/admin/billing-config").json()
    assert (config["alert_threshold_percent"], config["welcome_credits"]) == (90, 25)
    assert_accessible_basics(page)
    photograph(page, "admin-config")

    page.get_by_role("link", name="Packages").click()
    starter = page.locator('form[data-package="starter"]')
    starter.get_by_label("Name").fill("Starter Plus")
    starter.get_by_label("Price (BRL)").fill("35.00")
    starter.get_by_role("button").click()
    expect(page.locator(".notice")).to_have_text("The package was saved.")
    expect(page.locator('form[data-package="starter"] legend')).to_contain_text("R$ 35.00")
    catalogue = {p["id"]: p for p in gateway.client().get("/api/credits/packages").json()["packages"]}
    assert catalogue["starter"]["name"] == "Starter Plus"
    assert catalogue["starter"]["price"]["amount_minor"] == 3_500
    assert_accessible_basics(page)
    photograph(page, "admin-packages")
    assert offline.external() == []
    context.close()


def _through_fake_checkout(gateway: Gateway, fake_stripe: FakeStripe, bought: list[str]) -> object:
    """Stand in for Stripe's hosted page: the buy form's answer must send the browser to Checkout; the card
    is paid there (the fake Stripe's signed webhook), and Stripe sends the browser back to the success page."""

    def checkout(route: Route) -> None:
        answer = route.fetch(max_redirects=0)
        location = answer.headers["location"]
        assert answer.status == 303
        assert location.startswith("https://checkout.stripe.com/c/pay/")
        session_id = urlsplit(location).path.rsplit("/", 1)[1]
        bought.append(session_id)
        deliver(gateway, fake_stripe, fake_stripe.complete_with_card(session_id))
        state(gateway, session_id)
        route.fulfill(status=303, headers={"Location": f"{gateway.base_url}/credits/success?session_id={session_id}"})

    return checkout


@pytest.mark.browser
def test_a_user_sees_the_balance_move_live_and_buys_a_package(
    browser: Browser, gateway: Gateway, admin_api: Api, fake_stripe: FakeStripe
) -> None:
    fund(admin_api, "lucia", 250_000, "lucia")
    use(gateway, "lucia", 12_345, "lucia-1")
    wait_for_views(gateway)
    context, page, offline = new_page(browser)
    sign_in(page, gateway, "user", "lucia")
    expect(page).to_have_url(f"{gateway.base_url}/credits")
    balance = page.locator('[data-figure="balance_millicredits"]')
    expect(balance).to_have_attribute("data-value", "237655")
    expect(balance).to_have_text("237.655")
    expect(page.locator("main")).to_have_attribute("data-stream-state", "open")

    page.evaluate("window.notReloaded = true")
    debit = use(gateway, "lucia", 7_655, "lucia-2")
    expect(balance).to_have_attribute("data-value", str(debit["balance_after_millicredits"]), timeout=LIVE_TIMEOUT_MS)
    expect(balance).to_have_text("230")
    expect(page.locator("tr[data-movement]").first).to_contain_text("-7.655", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    assert_accessible_basics(page)
    photograph(page, "user-credits")

    bought: list[str] = []
    page.route("**/credits/buy", _through_fake_checkout(gateway, fake_stripe, bought))  # type: ignore[arg-type]
    page.locator('[data-package="starter"]').get_by_role("button", name="Buy Starter").click()
    expect(page).to_have_url(f"{gateway.base_url}/credits/success?session_id={bought[0]}")
    expect(page.locator("main")).to_have_attribute("data-status", "paid")
    expect(page.locator("h1")).to_have_text("Payment confirmed")
    photograph(page, "success")
    page.goto(f"{gateway.base_url}/credits")
    expect(balance).to_have_attribute("data-value", str(230_000 + 100_000))
    # The promotional grant is used before the purchase, which is shown as paid.
    lots = page.locator('[data-section="lots"] tr[data-lot]')
    expect(lots).to_have_count(2)
    expect(lots.nth(0)).to_have_attribute("data-kind", "promo")
    expect(lots.nth(1)).to_have_attribute("data-kind", "paid")
    expect(lots.nth(1)).to_have_attribute("data-remaining", "100000")
    assert offline.external() == []
    context.close()


@pytest.mark.browser
def test_sessions_roles_and_a_cross_site_form(browser: Browser, gateway: Gateway) -> None:
    context, page, _ = new_page(browser)
    for address in ("/credits", "/admin/packages"):
        page.goto(f"{gateway.base_url}{address}")
        expect(page).to_have_url(f"{gateway.base_url}/login")

    sign_in(page, gateway, "user", "nosy")
    answer = page.goto(f"{gateway.base_url}/admin/credits")
    assert answer is not None
    assert answer.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{gateway.base_url}/login?out=1")
    expect(page.locator(".notice")).to_have_text("You are signed out.")
    context.close()

    # An admin is signed in; another site's page posts a form at the adjustment endpoint.
    context, page, _ = new_page(browser)
    sign_in(page, gateway, "admin", "ops")
    attacker = "http://attacker.example/"
    forged = (
        f'<form method="post" action="{gateway.base_url}/admin/credits/adjust">'
        '<input name="user_id" value="mallory"><input name="amount" value="1000">'
        '<input name="reason" value="free money"><button>Win</button></form>'
    )
    page.route(attacker, lambda route: route.fulfill(body=forged, content_type="text/html"))
    page.goto(attacker)
    before = gateway.events()
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Win").click()
    assert navigation.value is not None
    assert navigation.value.status == 403
    time.sleep(0.2)
    assert gateway.events() == before
    context.close()
