"""The notification emails as specifications: given a notification's data, when rendered in a language,
then the subject, the text part and the HTML part say it in that language with exact figures.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from jinja2 import UndefinedError

from gateway.outbound.mail_render import (
    DEFAULT_LOCALE,
    ENVIRONMENT,
    FIELDS,
    LOCALES,
    MAIL_WORDS,
    RenderedEmail,
    render_email,
)
from gateway.web.locale import Locale

AT = datetime(2026, 11, 30, 14, 5, 59, tzinfo=UTC)
SITE = "https://credits.example.com"
USER = "user-42"
SESSION = "cs_test_abc"
SALES = {
    "potential_tokens": 12_345_678,
    "smallest_package_tokens": 100_000,
    "api_monthly_limit_tokens": 100_000_000,
    "alert_threshold_percent": 80,
}
# One realistic notification of every type, with every field the caller sends.
SAMPLES: dict[str, dict[str, Any]] = {
    "credits.low_balance": {
        "user_id": USER,
        "available_millicredits": 1_234_500,
        "threshold_millicredits": 5_000_000,
    },
    "credits.purchased": {
        "user_id": USER,
        "package_id": "starter",
        "granted_millicredits": 100_000,
        "checkout_session_id": SESSION,
    },
    "payment.failed": {"user_id": USER, "package_id": "starter", "checkout_session_id": SESSION},
    "credits.clawed_back": {
        "user_id": USER,
        "clawed_back_millicredits": 50_250,
        "reason": "dispute",
        "checkout_session_id": SESSION,
    },
    "credits.welcome_granted": {"user_id": USER, "granted_millicredits": 10_000},
    "alert.api_usage_threshold": {
        "potential_tokens": 12_345_678,
        "api_monthly_limit_tokens": 100_000_000,
        "alert_threshold_percent": 80,
        "api_usage_basis_points": 8123,
    },
    "alert.sales_paused": SALES,
    "alert.sales_resumed": SALES,
    "alert.webhook_failures": {
        "failures": 12,
        "threshold": 10,
        "window_start": "2026-11-30T13:45:00+00:00",
        "window_seconds": 900,
    },
    "alert.unusual_consumption": {
        "user_id": USER,
        "tokens_last_hour": 250_000,
        "hourly_average_tokens": 1_500,
        "factor": 10,
        "min_tokens": 50_000,
    },
}
EVERY_TYPE = sorted(FIELDS)


def render(notification_type: str, locale: str, **changes: Any) -> RenderedEmail:
    data = {**SAMPLES[notification_type], **changes}
    return render_email(notification_type, data, locale=locale, occurred_at=AT, public_url=SITE)


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


# Every type, both languages


def test_the_samples_cover_every_type_with_exactly_its_fields() -> None:
    assert set(SAMPLES) == set(FIELDS)
    for notification_type, fields in FIELDS.items():
        assert set(SAMPLES[notification_type]) == set(fields), notification_type


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("notification_type", EVERY_TYPE)
def test_every_type_renders_in_every_language(notification_type: str, locale: Locale) -> None:
    email = render(notification_type, locale)

    words = MAIL_WORDS[locale]
    message = words.messages[notification_type]
    assert email.subject.strip()
    assert "\n" not in email.subject
    assert "{" not in email.subject + email.text + email.html
    assert email.text.startswith(message.heading + "\n")
    assert f'<html lang="{locale}">' in email.html
    assert message.action in email.text
    assert message.action in email.html


def test_both_languages_write_the_same_types_as_the_fields_name() -> None:
    for locale in LOCALES:
        assert set(MAIL_WORDS[locale].messages) == set(FIELDS), locale
        assert set(MAIL_WORDS[locale].reasons) == {"refund", "dispute"}, locale


def test_every_placeholder_names_a_field_of_its_type() -> None:
    for locale in LOCALES:
        for notification_type, message in MAIL_WORDS[locale].messages.items():
            named = placeholders(message.subject) | placeholders(message.heading) | placeholders(message.body)
            assert named <= set(FIELDS[notification_type]), (locale, notification_type, named)


# Amounts, counts, percentages and moments


def test_given_a_fractional_balance_when_rendered_in_pt_br_then_thousands_use_dots_and_decimals_a_comma() -> None:
    email = render("credits.low_balance", "pt-BR")

    assert "1.234,5 créditos" in email.text
    assert "5.000 créditos" in email.text
    assert "1.234,5 créditos" in email.html


def test_given_a_fractional_balance_when_rendered_in_english_then_thousands_use_commas_and_decimals_a_dot() -> None:
    email = render("credits.low_balance", "en")

    assert "1,234.5 credits" in email.text
    assert "5,000 credits" in email.text


@pytest.mark.parametrize(
    ("millicredits", "pt_br", "en"),
    [
        (1_000, "1 crédito", "1 credit"),
        (1, "0,001 créditos", "0.001 credits"),
        (50_250, "50,25 créditos", "50.25 credits"),
        (2**53 - 1, "9.007.199.254.740,991 créditos", "9,007,199,254,740.991 credits"),
    ],
)
def test_given_an_amount_when_rendered_then_credits_are_exact_with_only_the_decimals_they_need(
    millicredits: int, pt_br: str, en: str
) -> None:
    assert pt_br in render("credits.welcome_granted", "pt-BR", granted_millicredits=millicredits).text
    assert en in render("credits.welcome_granted", "en", granted_millicredits=millicredits).text


def test_given_a_float_amount_when_rendered_then_it_is_refused_rather_than_rounded() -> None:
    with pytest.raises(TypeError, match="granted_millicredits"):
        render("credits.welcome_granted", "en", granted_millicredits=1234.5)


def test_given_api_usage_when_rendered_then_tokens_have_separators_and_basis_points_are_a_percentage() -> None:
    pt_br = render("alert.api_usage_threshold", "pt-BR")
    en = render("alert.api_usage_threshold", "en")

    assert "81,23%" in pt_br.subject
    assert "12.345.678 tokens" in pt_br.text
    assert "100.000.000 tokens" in pt_br.text
    assert "80%" in pt_br.text
    assert "81.23%" in en.subject
    assert "12,345,678 tokens" in en.text
    assert "81%" in render("alert.api_usage_threshold", "en", api_usage_basis_points=8100).subject
    assert "80,5%" in render("alert.api_usage_threshold", "pt-BR", api_usage_basis_points=8050).subject


def test_given_a_moment_when_rendered_then_it_is_written_in_utc_to_the_minute() -> None:
    assert "Quando: 30/11/2026 14:05 UTC" in render("payment.failed", "pt-BR").text
    assert "When: 2026-11-30 14:05 UTC" in render("payment.failed", "en").text


def test_given_a_moment_in_another_zone_when_rendered_then_it_is_converted_to_utc() -> None:
    brasilia = AT.astimezone(timezone(timedelta(hours=-3)))
    email = render_email(
        "payment.failed", SAMPLES["payment.failed"], locale="en", occurred_at=brasilia, public_url=SITE
    )

    assert "2026-11-30 14:05 UTC" in email.text


def test_given_webhook_failures_when_rendered_then_the_window_is_a_duration_and_a_moment() -> None:
    pt_br = render("alert.webhook_failures", "pt-BR")
    en = render("alert.webhook_failures", "en", window_seconds=3600, window_start="2026-11-30T13:00:00Z")

    assert "12 em 15 min a partir de 30/11/2026 13:45 UTC" in pt_br.text
    assert "limite de alerta de 10" in pt_br.text
    assert "12 in 1 h from 2026-11-30 13:00 UTC" in en.text


def test_given_a_clawback_when_rendered_then_the_reason_is_translated() -> None:
    assert "Motivo: o pagamento foi contestado." in render("credits.clawed_back", "pt-BR").text
    assert "Reason: the payment was refunded." in render("credits.clawed_back", "en", reason="refund").text
    assert "50,25 créditos" in render("credits.clawed_back", "pt-BR").text


# Escaping


def test_given_a_user_id_with_markup_when_rendered_then_html_escapes_it_and_text_keeps_it() -> None:
    email = render("alert.unusual_consumption", "pt-BR", user_id="<João & co>")

    assert "&lt;João &amp; co&gt;" in email.html
    assert "<João" not in email.html
    assert "O usuário <João & co> usou 250.000 tokens" in email.text
    assert email.subject == "Alerta: consumo incomum de <João & co>"


def test_given_a_user_id_with_a_line_break_when_rendered_then_the_subject_stays_one_line() -> None:
    email = render("alert.unusual_consumption", "en", user_id="evil\r\nBcc: someone@example.com")

    assert email.subject == "Alert: unusual consumption by evil Bcc: someone@example.com"


# Footer and links


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("notification_type", EVERY_TYPE)
def test_the_footer_says_why_and_links_to_the_readers_page(notification_type: str, locale: Locale) -> None:
    email = render_email(
        notification_type, SAMPLES[notification_type], locale=locale, occurred_at=AT, public_url=SITE + "/"
    )

    words = MAIL_WORDS[locale]
    alert = notification_type.startswith("alert.")
    link = f"{SITE}/admin/credits" if alert else f"{SITE}/credits"
    footer = words.alert_footer if alert else words.user_footer
    assert email.text.endswith(f"{footer} {link}\n")
    assert f'{footer} <a href="{link}"' in email.html


def test_the_html_part_loads_nothing_from_elsewhere() -> None:
    email = render("credits.purchased", "en")

    assert "<link" not in email.html
    assert "<script" not in email.html
    assert "src=" not in email.html


# Languages


@pytest.mark.parametrize("locale", ["fr", "", "pt", "pt-PT"])
def test_given_a_language_we_do_not_write_when_rendered_then_it_is_in_brazilian_portuguese(locale: str) -> None:
    assert DEFAULT_LOCALE == "pt-BR"
    assert render("credits.purchased", locale) == render("credits.purchased", "pt-BR")


def test_given_a_regional_english_when_rendered_then_it_is_in_english() -> None:
    assert render("credits.purchased", "en-US") == render("credits.purchased", "en")


def test_the_portuguese_has_its_accents() -> None:
    email = render("credits.purchased", "pt-BR")

    assert email.subject == "Compra confirmada: 100 créditos"
    assert "Referência da compra: cs_test_abc" in email.text


# Refusals


def test_given_an_unknown_type_when_rendered_then_it_is_refused() -> None:
    with pytest.raises(ValueError, match=r"credits\.unknown"):
        render_email("credits.unknown", {}, locale="en", occurred_at=AT, public_url=SITE)


@pytest.mark.parametrize("notification_type", EVERY_TYPE)
def test_given_data_missing_a_field_when_rendered_then_it_raises(notification_type: str) -> None:
    for field in FIELDS[notification_type]:
        data = {key: value for key, value in SAMPLES[notification_type].items() if key != field}
        with pytest.raises(KeyError, match=field):
            render_email(notification_type, data, locale="pt-BR", occurred_at=AT, public_url=SITE)


@pytest.mark.parametrize("name", ["layout.html", "layout.txt"])
def test_given_a_layout_missing_a_value_when_rendered_then_strict_undefined_raises(name: str) -> None:
    with pytest.raises(UndefinedError):
        ENVIRONMENT.get_template(name).render(locale="en", heading="Hello")
