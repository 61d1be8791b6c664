"""The emails the service sends: one layout in HTML and one in text, and the sentences in each language.

A notification's ``data`` holds integers of the smallest unit and plain strings. They become text in the
reader's language only here, exactly (never through a float). The templates hold the structure and the
sentences live in ``MAIL_WORDS``, so both parts of an email always say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gateway.web.locale import Locale, credits_text, integer_text, number_text
from ledger.amounts import MILLICREDITS_PER_CREDIT

# Built from this file, not the working directory, so the installed wheel and a checkout find the same files.
TEMPLATES: Final = Path(__file__).parent / "templates" / "email"
LOCALES: Final[tuple[Locale, ...]] = ("pt-BR", "en")
# Most buyers read Brazilian Portuguese; a person with no known language gets it.
DEFAULT_LOCALE: Final[Locale] = "pt-BR"
BASIS_POINTS_PER_PERCENT: Final = 100
TOKEN: Final = ("token", "tokens")
# Durations are written with the SI symbols, the same in both languages and with no plural.
DURATION_UNITS: Final = (("h", 3600), ("min", 60))

SALES_FIELDS: Final = (
    "potential_tokens",
    "smallest_package_tokens",
    "api_monthly_limit_tokens",
    "alert_threshold_percent",
)
# The fields each type's ``data`` must hold. Their names also say how they are written: ``*_millicredits``
# in credits, ``*_tokens`` and ``tokens_*`` in tokens, ``*_percent``, ``*_basis_points`` and ``*_seconds``
# as such, other integers as plain numbers, strings as they are (``reason`` translated, ``window_start`` a date).
FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "credits.low_balance": ("user_id", "available_millicredits", "threshold_millicredits"),
    "credits.purchased": ("user_id", "package_id", "granted_millicredits", "checkout_session_id"),
    "payment.failed": ("user_id", "package_id", "checkout_session_id"),
    "credits.clawed_back": ("user_id", "clawed_back_millicredits", "reason", "checkout_session_id"),
    "credits.welcome_granted": ("user_id", "granted_millicredits"),
    "alert.api_usage_threshold": (
        "potential_tokens",
        "api_monthly_limit_tokens",
        "alert_threshold_percent",
        "api_usage_basis_points",
    ),
    "alert.sales_paused": SALES_FIELDS,
    "alert.sales_resumed": SALES_FIELDS,
    "alert.webhook_failures": ("failures", "threshold", "window_start", "window_seconds"),
    "alert.unusual_consumption": ("user_id", "tokens_last_hour", "hourly_average_tokens", "factor", "min_tokens"),
}
# Alerts go to the operators and point at the admin dashboard; every other type goes to the credit buyer.
ALERT_PREFIX: Final = "alert."


class RenderedEmail(msgspec.Struct, frozen=True, kw_only=True):
    subject: str
    text: str
    html: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One type's sentences; each may name ``{fields}`` of that type. ``action`` labels the link to act on it."""

    subject: str
    heading: str
    body: str  # paragraphs, one a line
    action: str


@dataclass(frozen=True, kw_only=True, slots=True)
class MailWords:
    when: str
    user_footer: str
    alert_footer: str
    credit: tuple[str, str]  # singular, plural; "token" is the same word in both languages
    reasons: dict[str, str]
    messages: dict[str, Message]


MAIL_WORDS: Final[dict[Locale, MailWords]] = {
    "pt-BR": MailWords(
        when="Quando",
        user_footer="Você recebe este e-mail porque tem uma conta de créditos neste serviço. Seus créditos:",
        alert_footer="Você recebe este alerta porque administra o serviço de créditos. Painel:",
        credit=("crédito", "créditos"),
        reasons={"refund": "o pagamento foi reembolsado", "dispute": "o pagamento foi contestado"},
        messages={
            "credits.low_balance": Message(
                subject="Seu saldo de créditos está baixo",
                heading="Seu saldo está acabando",
                body="Seu saldo disponível é de {available_millicredits}, abaixo do seu limite de aviso de "
                "{threshold_millicredits}.\n"
                "Compre mais créditos para continuar usando o serviço sem interrupção.",
                action="Comprar créditos",
            ),
            "credits.purchased": Message(
                subject="Compra confirmada: {granted_millicredits}",
                heading="Obrigado pela sua compra!",
                body="Adicionamos {granted_millicredits} ao seu saldo (pacote {package_id}).\n"
                "Referência da compra: {checkout_session_id}",
                action="Ver meu saldo",
            ),
            "payment.failed": Message(
                subject="Seu pagamento não foi concluído",
                heading="O pagamento não foi concluído",
                body="O pagamento do pacote {package_id} não foi concluído: foi recusado ou expirou antes de ser "
                "feito, como um PIX não pago a tempo.\n"
                "Nada foi cobrado e nenhum crédito foi adicionado. Você pode tentar de novo quando quiser.\n"
                "Referência: {checkout_session_id}",
                action="Tentar de novo",
            ),
            "credits.clawed_back": Message(
                subject="Créditos removidos do seu saldo",
                heading="Removemos créditos do seu saldo",
                body="Removemos {clawed_back_millicredits} do seu saldo, referentes à compra {checkout_session_id}.\n"
                "Motivo: {reason}.\n"
                "Se o saldo ficar negativo, o uso fica suspenso até ele voltar a ser positivo.",
                action="Ver meu histórico",
            ),
            "credits.welcome_granted": Message(
                subject="Boas-vindas! Você ganhou {granted_millicredits}",
                heading="Boas-vindas!",
                body="Adicionamos {granted_millicredits} ao seu saldo para você começar.\n"
                "Acompanhe seu saldo e seu uso na sua página de créditos.",
                action="Ver meus créditos",
            ),
            "alert.api_usage_threshold": Message(
                subject="Alerta: uso da API em {api_usage_basis_points} do limite mensal",
                heading="Uso da API no limite de alerta",
                body="O uso da API chegou a {api_usage_basis_points} do limite mensal de {api_monthly_limit_tokens}; "
                "o limite de alerta é {alert_threshold_percent}.\n"
                "Os créditos em circulação podem comprar {potential_tokens}.",
                action="Abrir o painel",
            ),
            "alert.sales_paused": Message(
                subject="Alerta: vendas de créditos pausadas",
                heading="Vendas pausadas",
                body="Os créditos em circulação podem comprar {potential_tokens}; somados ao menor pacote "
                "({smallest_package_tokens}), passariam de {alert_threshold_percent} do limite mensal da API, "
                "de {api_monthly_limit_tokens}.\n"
                "Novas compras são recusadas até haver espaço de novo: conforme os créditos forem usados, "
                "ou se o limite ou o percentual de alerta aumentar.",
                action="Abrir o painel",
            ),
            "alert.sales_resumed": Message(
                subject="Vendas de créditos retomadas",
                heading="Vendas retomadas",
                body="Os créditos em circulação podem comprar {potential_tokens}; somados ao menor pacote "
                "({smallest_package_tokens}), cabem de novo em {alert_threshold_percent} do limite mensal da "
                "API, de {api_monthly_limit_tokens}.\n"
                "As compras voltaram a ser aceitas.",
                action="Abrir o painel",
            ),
            "alert.webhook_failures": Message(
                subject="Alerta: falhas no webhook da Stripe ({failures})",
                heading="Falhas no webhook da Stripe",
                body="Falhas ao receber webhooks da Stripe: {failures} em {window_seconds} a partir de {window_start}, "
                "acima do limite de alerta de {threshold}.\n"
                "Verifique a configuração do webhook na Stripe (o segredo de assinatura) e os logs do serviço.",
                action="Abrir o painel",
            ),
            "alert.unusual_consumption": Message(
                subject="Alerta: consumo incomum de {user_id}",
                heading="Consumo incomum de tokens",
                body="O usuário {user_id} usou {tokens_last_hour} na última hora; a média dele nos sete dias "
                "anteriores é de {hourly_average_tokens} por hora.\n"
                "O alerta dispara quando uma hora chega a {factor} vezes essa média e a pelo menos {min_tokens}.",
                action="Abrir o painel",
            ),
        },
    ),
    "en": MailWords(
        when="When",
        user_footer="You get this email because you have a credits account with this service. Your credits:",
        alert_footer="You get this alert because you administer the credits service. Dashboard:",
        credit=("credit", "credits"),
        reasons={"refund": "the payment was refunded", "dispute": "the payment was disputed"},
        messages={
            "credits.low_balance": Message(
                subject="Your credit balance is low",
                heading="Your balance is running low",
                body="Your available balance is {available_millicredits}, under your threshold of "
                "{threshold_millicredits}.\n"
                "Buy more credits to keep using the service without interruption.",
                action="Buy credits",
            ),
            "credits.purchased": Message(
                subject="Purchase confirmed: {granted_millicredits}",
                heading="Thank you for your purchase!",
                body="We added {granted_millicredits} to your balance (package {package_id}).\n"
                "Purchase reference: {checkout_session_id}",
                action="See my balance",
            ),
            "payment.failed": Message(
                subject="Your payment did not go through",
                heading="The payment did not go through",
                body="The payment for package {package_id} did not go through: it was declined or expired before "
                "it was made, like a PIX not paid in time.\n"
                "Nothing was charged and no credits were added. You can try again whenever you like.\n"
                "Reference: {checkout_session_id}",
                action="Try again",
            ),
            "credits.clawed_back": Message(
                subject="Credits removed from your balance",
                heading="We removed credits from your balance",
                body="We removed {clawed_back_millicredits} from your balance for purchase {checkout_session_id}.\n"
                "Reason: {reason}.\n"
                "If your balance falls below zero, usage is paused until it is positive again.",
                action="See my history",
            ),
            "credits.welcome_granted": Message(
                subject="Welcome! You got {granted_millicredits}",
                heading="Welcome!",
                body="We added {granted_millicredits} to your balance to get you started.\n"
                "Follow your balance and usage on your credits page.",
                action="See my credits",
            ),
            "alert.api_usage_threshold": Message(
                subject="Alert: API usage at {api_usage_basis_points} of the monthly limit",
                heading="API usage at the alert threshold",
                body="API usage reached {api_usage_basis_points} of the monthly limit of {api_monthly_limit_tokens}; "
                "the alert threshold is {alert_threshold_percent}.\n"
                "Credits in circulation can buy {potential_tokens}.",
                action="Open the dashboard",
            ),
            "alert.sales_paused": Message(
                subject="Alert: credit sales paused",
                heading="Sales paused",
                body="Credits in circulation can buy {potential_tokens}; with the smallest package "
                "({smallest_package_tokens}) they would pass {alert_threshold_percent} of the API's monthly "
                "limit of {api_monthly_limit_tokens}.\n"
                "New purchases are refused until there is room again: as credits are used, or if the limit "
                "or the alert percentage is raised.",
                action="Open the dashboard",
            ),
            "alert.sales_resumed": Message(
                subject="Credit sales resumed",
                heading="Sales resumed",
                body="Credits in circulation can buy {potential_tokens}; with the smallest package "
                "({smallest_package_tokens}) they fit again within {alert_threshold_percent} of the API's "
                "monthly limit of {api_monthly_limit_tokens}.\n"
                "Purchases are accepted again.",
                action="Open the dashboard",
            ),
            "alert.webhook_failures": Message(
                subject="Alert: Stripe webhook failures ({failures})",
                heading="Stripe webhook failures",
                body="Failures receiving Stripe webhooks: {failures} in {window_seconds} from {window_start}, over "
                "the alert threshold of {threshold}.\n"
                "Check the webhook's setup in Stripe (its signing secret) and the service's logs.",
                action="Open the dashboard",
            ),
            "alert.unusual_consumption": Message(
                subject="Alert: unusual consumption by {user_id}",
                heading="Unusual token consumption",
                body="User {user_id} used {tokens_last_hour} in the last hour; their hourly average over the seven "
                "days before is {hourly_average_tokens}.\n"
                "The alert fires when an hour reaches {factor} times that average and at least {min_tokens}.",
                action="Open the dashboard",
            ),
        },
    ),
}

# Only the HTML part is escaped: the text part carries a user id like ``<João & co>`` as it is. Strict
# undefined makes a value the layout names but the context lacks an error, not a blank in a sent email.
ENVIRONMENT: Final = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render_email(
    notification_type: str,
    data: Mapping[str, Any],
    *,
    locale: str,
    occurred_at: datetime,
    public_url: str,
) -> RenderedEmail:
    """The email for one notification, in ``locale`` (Brazilian Portuguese when it is not one we write)."""
    fields = FIELDS.get(notification_type)
    if fields is None:
        raise ValueError(f"unknown notification type: {notification_type!r}")
    language = locale_for(locale)
    words = MAIL_WORDS[language]
    message = words.messages[notification_type]
    # A missing field is a KeyError here, before any text is made.
    values = {field: _value_text(field, data[field], words, language) for field in fields}
    alert = notification_type.startswith(ALERT_PREFIX)
    link = public_url.rstrip("/") + ("/admin/credits" if alert else "/credits")
    # A subject is one header line: a line break in a user id must not reach it.
    subject = " ".join(message.subject.format_map(values).split())
    context = {
        "locale": language,
        "subject": subject,
        "heading": message.heading.format_map(values),
        # Split before the values go in, so a line break inside a value never makes a paragraph.
        "lines": [line.format_map(values) for line in message.body.split("\n")],
        "action": message.action,
        "link": link,
        "when_label": words.when,
        "when": moment_text(occurred_at, language),
        "footer": words.alert_footer if alert else words.user_footer,
    }
    return RenderedEmail(
        subject=subject,
        text=ENVIRONMENT.get_template("layout.txt").render(context),
        html=ENVIRONMENT.get_template("layout.html").render(context),
    )


def locale_for(locale: str) -> Locale:
    """One of ``LOCALES`` for a stored preference: any English (``en-US`` too) reads English, the rest pt-BR."""
    return "en" if locale.lower().split("-")[0] == "en" else DEFAULT_LOCALE


def moment_text(moment: datetime, locale: Locale) -> str:
    """A moment in UTC to the minute: ``30/11/2026 14:05 UTC`` or ``2026-11-30 14:05 UTC``."""
    # A naive moment is taken as UTC, the only zone the service records in.
    utc = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return f"{utc:%d/%m/%Y %H:%M} UTC" if locale == "pt-BR" else f"{utc:%Y-%m-%d %H:%M} UTC"


def _value_text(field: str, value: Any, words: MailWords, locale: Locale) -> str:
    if isinstance(value, str):
        if field == "reason":
            return words.reasons.get(value, value)
        return _rfc3339_text(value, locale) if field == "window_start" else value
    # Amounts stay exact: a float (or a bool, which is an int) is a caller's mistake, not something to round.
    if type(value) is not int:
        raise TypeError(f"{field} must be an integer, not {type(value).__name__}")
    if field.endswith("_millicredits"):
        text = _counted(credits_text(value, locale), words.credit, one=value == MILLICREDITS_PER_CREDIT)
    elif field.endswith("_tokens") or field.startswith("tokens_"):
        text = _counted(integer_text(value, locale), TOKEN, one=value == 1)
    elif field.endswith("_percent"):
        text = f"{integer_text(value, locale)}%"
    elif field.endswith("_basis_points"):
        text = f"{_exact_text(Decimal(value) / BASIS_POINTS_PER_PERCENT, locale)}%"
    elif field.endswith("_seconds"):
        text = _duration_text(value, locale)
    else:
        text = integer_text(value, locale)
    return text


def _counted(number: str, unit: tuple[str, str], *, one: bool) -> str:
    return f"{number} {unit[0] if one else unit[1]}"


def _exact_text(value: Decimal, locale: Locale) -> str:
    """A decimal with only the places it has: ``81,23``, ``81,2``, ``81``."""
    exponent = value.normalize().as_tuple().exponent
    places = max(0, -exponent) if isinstance(exponent, int) else 0
    return number_text(value, locale, places=places)


def _duration_text(seconds: int, locale: Locale) -> str:
    """A window in the largest whole unit: 3600 is ``1 h``, 900 is ``15 min``, 90 is ``90 s``."""
    for symbol, size in DURATION_UNITS:
        if seconds and seconds % size == 0:
            return f"{integer_text(seconds // size, locale)} {symbol}"
    return f"{integer_text(seconds, locale)} s"


def _rfc3339_text(value: str, locale: Locale) -> str:
    try:
        return moment_text(datetime.fromisoformat(value), locale)
    except ValueError:
        # An RFC 3339 form Python does not read (a lowercase "t", say) still tells the reader the moment.
        return value
