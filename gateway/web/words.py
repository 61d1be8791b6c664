"""What the pages say, in each language they speak. Templates hold the structure; the sentences live here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.web.locale import Locale


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """A purchase's state as its buyer reads it; ``explanation`` may name ``{credits}``."""

    title: str
    explanation: str
    settled: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Words:
    service: str
    purchase: str
    cancel_title: str
    cancel_text: str
    not_found_title: str
    not_found_text: str
    package: str
    credits: str
    price: str
    payment_method: str
    refunded: str
    check_again: str
    outcomes: dict[str, Outcome]
    methods: dict[str, str]


WORDS: Final[dict[Locale, Words]] = {
    "en": Words(
        service="Credits",
        purchase="Your purchase",
        cancel_title="Purchase cancelled",
        cancel_text="You left the checkout before paying. Nothing was charged and your balance is unchanged.",
        not_found_title="Purchase not found",
        not_found_text="No purchase matches this link. Check that the address is complete.",
        package="Package",
        credits="Credits",
        price="Price",
        payment_method="Payment method",
        refunded="{amount} was refunded.",
        check_again="Check again",
        outcomes={
            "open": Outcome(
                title="Waiting for confirmation",
                explanation="Stripe has not confirmed this payment yet. This usually takes a few seconds.",
                settled=False,
            ),
            "pending": Outcome(
                title="PIX payment pending",
                explanation="The {credits} credits are added to your balance as soon as the PIX is paid. "
                "You can close this page.",
                settled=False,
            ),
            "paid": Outcome(
                title="Payment confirmed",
                explanation="{credits} credits were added to your balance.",
                settled=True,
            ),
            "failed": Outcome(
                title="Payment failed",
                explanation="The payment did not go through and no credits were added.",
                settled=True,
            ),
            "expired": Outcome(
                title="Checkout expired",
                explanation="The checkout expired before it was paid. Nothing was charged.",
                settled=True,
            ),
        },
        methods={"card": "Card", "pix": "PIX"},
    ),
    "pt-BR": Words(
        service="Créditos",
        purchase="Sua compra",
        cancel_title="Compra cancelada",
        cancel_text="Você saiu do checkout antes de pagar. Nada foi cobrado e seu saldo não mudou.",
        not_found_title="Compra não encontrada",
        not_found_text="Nenhuma compra corresponde a este link. Verifique se o endereço está completo.",
        package="Pacote",
        credits="Créditos",
        price="Valor",
        payment_method="Forma de pagamento",
        refunded="{amount} foi reembolsado.",
        check_again="Verificar novamente",
        outcomes={
            "open": Outcome(
                title="Aguardando confirmação",
                explanation="A Stripe ainda não confirmou este pagamento. Isso costuma levar alguns segundos.",
                settled=False,
            ),
            "pending": Outcome(
                title="Pagamento PIX pendente",
                explanation="Os {credits} créditos entram no seu saldo assim que o PIX for pago. "
                "Você pode fechar esta página.",
                settled=False,
            ),
            "paid": Outcome(
                title="Pagamento confirmado",
                explanation="{credits} créditos foram adicionados ao seu saldo.",
                settled=True,
            ),
            "failed": Outcome(
                title="Pagamento não concluído",
                explanation="O pagamento não foi concluído e nenhum crédito foi adicionado.",
                settled=True,
            ),
            "expired": Outcome(
                title="Checkout expirado",
                explanation="O checkout expirou antes do pagamento. Nada foi cobrado.",
                settled=True,
            ),
        },
        methods={"card": "Cartão", "pix": "PIX"},
    ),
}
