"""The service's pages against the real gateway: the API document's viewer and the Stripe Checkout return pages.

The browser tests drive Debian's chromium (``/usr/bin/chromium``) with Playwright; Playwright's own browser
build is never downloaded. They check that the Swagger UI renders every operation from the service's own
files with no request leaving the machine, and that the success page follows a real purchase, made
through the API and the fake Stripe's signed webhooks, from open through PIX pending to paid. Screenshots at
1280 px go to ``tests/screenshots/`` (ignored by git) for a person to look at.

The plain HTTP tests beside them pin what a browser would not show: status codes, headers, that no token
is needed, and that the pages stay out of the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from tests.gateway.server import Api, Gateway, running
from tests.gateway.test_stripe import buy, deliver, state
from tests.stripe_fake import FakeStripe

SCREENSHOTS = Path(__file__).parents[1] / "screenshots"
WIDE = {"width": 1280, "height": 800}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture
def gateway(clean_database: str, fake_stripe: FakeStripe) -> Iterator[Gateway]:
    yield from running(
        clean_database,
        STRIPE_SECRET_KEY="sk_test_ledger",
        STRIPE_WEBHOOK_SECRET=fake_stripe.webhook_secret,
        STRIPE_API_BASE=fake_stripe.api_base,
    )


@pytest.fixture
def buyer(gateway: Gateway) -> Api:
    return gateway.client("user", "buyer")


class Offline:
    """Every request a page makes; any to another host is aborted, so a test never reaches the internet."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        page.on("request", self._seen)
        page.route(lambda url: urlsplit(url).hostname not in LOCAL_HOSTS, lambda route: route.abort())

    def _seen(self, request: Request) -> None:
        self.urls.append(request.url)

    def external(self) -> list[str]:
        return [
            url
            for url in self.urls
            if url.startswith(("http:", "https:", "ws:", "wss:")) and urlsplit(url).hostname not in LOCAL_HOSTS
        ]


def open_page(browser: Browser, locale: str = "en-US") -> tuple[Page, Offline]:
    page = browser.new_page(viewport=WIDE, locale=locale)
    return page, Offline(page)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


# In a browser.


@pytest.mark.browser
def test_the_api_viewer_renders_every_operation_from_the_services_own_files(browser: Browser, gateway: Gateway) -> None:
    operations = sum(len(item) for item in gateway.client().get("/schema").json()["paths"].values())
    page, offline = open_page(browser)
    page.goto(f"{gateway.base_url}/schema/swagger")
    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
    expect(page.locator(".opblock")).to_have_count(operations)
    debit = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/api/usage/debits"))
    expect(debit).to_contain_text("Debit the credits of usage that has happened")
    assert page.evaluate("window.versions.swaggerUI.version").startswith("5.")
    assert page.locator("text=Unable to render this definition").count() == 0
    screenshot(page, "swagger-1280")
    assert offline.external() == []
    assert any("/static/swagger-ui-" in url for url in offline.urls)
    page.close()


@pytest.mark.browser
def test_the_success_page_follows_a_pix_purchase_until_it_is_paid(
    browser: Browser, gateway: Gateway, fake_stripe: FakeStripe, buyer: Api
) -> None:
    session_id = buy(buyer)
    state(gateway, session_id)
    page, offline = open_page(browser)
    page.goto(f"{gateway.base_url}/credits/success?session_id={quote(session_id)}")
    main = page.locator("main")
    expect(main).to_have_attribute("data-status", "open")
    expect(page.locator("h1")).to_have_text("Waiting for confirmation")
    expect(page.locator("html")).to_have_attribute("lang", "en")

    deliver(gateway, fake_stripe, fake_stripe.complete_with_pix(session_id))
    state(gateway, session_id)
    page.get_by_role("link", name="Check again").click()
    expect(main).to_have_attribute("data-status", "pending")
    expect(page.locator("h1")).to_have_text("PIX payment pending")
    expect(page.locator(".details")).to_contain_text("PIX")
    screenshot(page, "success-pending-1280")

    deliver(gateway, fake_stripe, fake_stripe.pix_paid(session_id))
    state(gateway, session_id)
    page.get_by_role("link", name="Check again").click()
    expect(main).to_have_attribute("data-status", "paid")
    expect(page.locator("h1")).to_have_text("Payment confirmed")
    expect(page.locator(".lead")).to_have_text("100 credits were added to your balance.")
    expect(page.locator(".details")).to_contain_text("Starter")
    expect(page.locator(".details")).to_contain_text("R$ 30.00")
    expect(page.get_by_role("link", name="Check again")).to_have_count(0)
    screenshot(page, "success-paid-1280")
    assert offline.external() == []
    page.close()


@pytest.mark.browser
def test_an_expired_checkout_speaks_the_browsers_portuguese(
    browser: Browser, gateway: Gateway, fake_stripe: FakeStripe, buyer: Api
) -> None:
    session_id = buy(buyer)
    deliver(gateway, fake_stripe, fake_stripe.expire_session(session_id))
    state(gateway, session_id)
    page, offline = open_page(browser, locale="pt-BR")
    page.goto(f"{gateway.base_url}/credits/success?session_id={quote(session_id)}")
    expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
    expect(page.locator("main")).to_have_attribute("data-status", "expired")
    expect(page.locator("h1")).to_have_text("Checkout expirado")
    expect(page.locator(".details")).to_contain_text("R$ 30,00")
    screenshot(page, "success-expired-pt-1280")
    assert offline.external() == []
    page.close()


@pytest.mark.browser
def test_cancel_and_an_unknown_session_are_plain_pages(browser: Browser, gateway: Gateway) -> None:
    page, offline = open_page(browser)
    answer = page.goto(f"{gateway.base_url}/credits/cancel")
    assert answer is not None
    assert answer.status == 200
    expect(page.locator("h1")).to_have_text("Purchase cancelled")
    expect(page.locator(".lead")).to_contain_text("Nothing was charged")
    screenshot(page, "cancel-1280")
    answer = page.goto(f"{gateway.base_url}/credits/success?session_id=cs_test_unknown")
    assert answer is not None
    assert answer.status == 404
    expect(page.locator("h1")).to_have_text("Purchase not found")
    screenshot(page, "not-found-1280")
    assert offline.external() == []
    page.close()


# Over plain HTTP.


def test_the_return_pages_need_no_token_and_are_kept_nowhere(gateway: Gateway) -> None:
    client = gateway.client()
    cancel = client.get("/credits/cancel", headers={"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.8"})
    assert cancel.status_code == 200
    assert cancel.headers["content-type"].startswith("text/html")
    assert '<html lang="pt-BR">' in cancel.text
    assert "Nada foi cobrado" in cancel.text
    assert cancel.headers["cache-control"] == "no-store"
    assert cancel.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in cancel.headers["content-security-policy"]
    for address in ("/credits/success", "/credits/success?session_id=", "/credits/success?session_id=%00"):
        missing = client.get(address)
        assert missing.status_code == 404, address
        assert missing.headers["content-type"].startswith("text/html")
        assert '<html lang="en">' in missing.text


def test_a_session_id_is_never_written_into_the_page(gateway: Gateway) -> None:
    answer = gateway.client().get("/credits/success", params={"session_id": "<script>alert(1)</script>"})
    assert answer.status_code == 404
    assert "<script>" not in answer.text
    assert "alert(1)" not in answer.text


def test_the_viewer_files_are_served_with_no_token_and_cached(gateway: Gateway) -> None:
    client = gateway.client()
    viewer = client.get("/schema/swagger")
    assert viewer.status_code == 200
    assert "cdn." not in viewer.text
    version_path = next(part for part in viewer.text.split('"') if part.endswith("/swagger-ui-bundle.js"))
    bundle = client.get(version_path)
    assert bundle.status_code == 200
    assert "immutable" in bundle.headers["cache-control"]
    stylesheet = client.get("/static/pages.css")
    assert stylesheet.status_code == 200
    assert "max-age" in stylesheet.headers["cache-control"]


def test_the_pages_stay_out_of_the_api_document(gateway: Gateway) -> None:
    paths = gateway.client().get("/schema").json()["paths"]
    assert not [path for path in paths if path.startswith(("/credits", "/static"))]
