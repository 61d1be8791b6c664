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
    to_my_credits: str
    outcomes: dict[str, Outcome]
    methods: dict[str, str]
    layout: Layout
    sign_in: SignIn
    mine: MyCredits
    lots: LotWords


@dataclass(frozen=True, kw_only=True, slots=True)
class LotWords:
    """The open lots of a balance, on the user's page and the admin's view of a user."""

    title: str
    note: str
    lot: str
    kind: str
    granted: str
    remaining: str
    expires: str
    never: str
    none: str
    kinds: dict[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """What every page's frame says: navigation, who is signed in, and the refusals any page may give."""

    skip: str
    nav_label: str
    dashboard: str
    users: str
    config: str
    packages: str
    my_credits: str
    sign_in: str
    sign_out: str
    signed_in_as: str
    roles: dict[str, str]
    forbidden_title: str
    forbidden_text: str
    back: str
    kinds: dict[str, str]
    data_table: str
    previous: str
    newest: str
    older: str
    no_movements: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SignIn:
    title: str
    intro: str
    field_label: str
    field_help: str
    button: str
    strict_note: str
    signed_out: str
    already: str
    refusals: dict[str, str]


@dataclass(frozen=True, kw_only=True, slots=True)
class MyCredits:
    title: str
    balance: str
    reserved: str
    available: str
    credits_unit: str
    live_note: str
    history: str
    when: str
    kind: str
    amount: str
    balance_after: str
    description: str
    usage_title: str
    usage_desc: str
    tokens: str
    day: str
    buy_title: str
    buy: str
    offer: str
    sales_paused: str
    no_packages: str
    refusals: dict[str, str]


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
        to_my_credits="Go to your credits",
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
        layout=Layout(
            skip="Skip to the content",
            nav_label="Pages",
            dashboard="Dashboard",
            users="Users",
            config="Billing settings",
            packages="Packages",
            my_credits="My credits",
            sign_in="Sign in",
            sign_out="Sign out",
            signed_in_as="Signed in as {sub} ({role})",
            roles={"admin": "admin", "user": "user"},
            forbidden_title="Not allowed",
            forbidden_text="This page or action is not open to your session, or the form arrived without this "
            "page's security token. Nothing was changed.",
            back="Go to your page",
            kinds={
                "purchase": "Purchase",
                "grant": "Grant",
                "debit": "Usage",
                "reservation": "Hold",
                "settlement": "Settlement",
                "release": "Hold released",
                "adjustment": "Adjustment",
                "refund": "Refund",
                "dispute": "Dispute",
                "expiry": "Expiry",
            },
            data_table="The data as a table",
            previous="Previous",
            newest="Newest",
            older="Older",
            no_movements="No movements yet.",
        ),
        sign_in=SignIn(
            title="Sign in",
            intro="Paste a token minted by your app or by the command ledger token. An admin token opens the "
            "credits dashboard; a user token opens that user's credits.",
            field_label="Token",
            field_help="A JWT, three parts separated by dots. The session lasts as long as the token, "
            "at most 12 hours.",
            button="Sign in",
            strict_note="Followed a link from another site and landed here? The session cookie is only sent "
            "on this site's own links: open the page again from here.",
            signed_out="You are signed out.",
            already="You are signed in as {sub}.",
            refusals={
                "missing": "Paste a token to sign in.",
                "malformed": "This is not a token: a JWT has three parts separated by dots.",
                "expired": "This token has expired. Mint a new one.",
                "signature": "This token was not signed with this service's secret.",
                "claims": "This token lacks sub, role or exp, or one of them is not valid.",
                "role": "This token's role is unknown: it must be user or admin.",
                "service": "Service tokens are for the API. Sign in with a user or admin token.",
            },
        ),
        mine=MyCredits(
            title="Your credits",
            balance="Balance",
            reserved="On hold",
            available="Available",
            credits_unit="credits",
            live_note="The balance updates by itself as you use credits.",
            history="History",
            when="When",
            kind="What",
            amount="Credits",
            balance_after="Balance after",
            description="Details",
            usage_title="Tokens used per day, last 30 days",
            usage_desc="{total} tokens in 30 days; the busiest day used {peak}.",
            tokens="Tokens",
            day="Day",
            buy_title="Buy credits",
            buy="Buy {name}",
            offer="{credits} credits for {price}",
            sales_paused="Sales are paused for now: a purchase may be refused until they resume.",
            no_packages="No package is on sale.",
            refusals={
                "sales-paused": "Sales are paused for now: no package can be bought. Please try again later.",
                "not-found": "This package is no longer on sale.",
                "payment-provider-error": "The payment provider could not start the checkout: {detail}",
                "payments-unavailable": "Payments are not available right now. Please try again later.",
            },
        ),
        lots=LotWords(
            title="Your credits by grant",
            note="Usage takes the credits that expire first, promotional before paid, then the oldest.",
            lot="Grant",
            kind="Kind",
            granted="Granted",
            remaining="Left",
            expires="Expires",
            never="never",
            none="No credits left.",
            kinds={"paid": "Paid", "promo": "Promotional"},
        ),
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
        to_my_credits="Ir para os seus créditos",
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
        layout=Layout(
            skip="Pular para o conteúdo",
            nav_label="Páginas",
            dashboard="Painel",
            users="Usuários",
            config="Configurações de cobrança",
            packages="Pacotes",
            my_credits="Meus créditos",
            sign_in="Entrar",
            sign_out="Sair",
            signed_in_as="Conectado como {sub} ({role})",
            roles={"admin": "admin", "user": "usuário"},
            forbidden_title="Não permitido",
            forbidden_text="Esta página ou ação não está aberta à sua sessão, ou o formulário chegou sem o código "
            "de segurança desta página. Nada foi alterado.",
            back="Ir para a sua página",
            kinds={
                "purchase": "Compra",
                "grant": "Concessão",
                "debit": "Uso",
                "reservation": "Reserva",
                "settlement": "Acerto",
                "release": "Reserva liberada",
                "adjustment": "Ajuste",
                "refund": "Reembolso",
                "dispute": "Contestação",
                "expiry": "Expiração",
            },
            data_table="Os dados em uma tabela",
            previous="Anterior",
            newest="Mais recentes",
            older="Mais antigos",
            no_movements="Nenhuma movimentação ainda.",
        ),
        sign_in=SignIn(
            title="Entrar",
            intro="Cole um token emitido pelo seu aplicativo ou pelo comando ledger token. Um token de admin abre "
            "o painel de créditos; um token de usuário abre os créditos desse usuário.",
            field_label="Token",
            field_help="Um JWT, com três partes separadas por pontos. A sessão dura o mesmo que o token, "
            "no máximo 12 horas.",
            button="Entrar",
            strict_note="Seguiu um link de outro site e caiu aqui? O cookie da sessão só é enviado nos links "
            "deste site: abra a página de novo a partir daqui.",
            signed_out="Você saiu.",
            already="Você está conectado como {sub}.",
            refusals={
                "missing": "Cole um token para entrar.",
                "malformed": "Isto não é um token: um JWT tem três partes separadas por pontos.",
                "expired": "Este token expirou. Emita um novo.",
                "signature": "Este token não foi assinado com o segredo deste serviço.",
                "claims": "Falta sub, role ou exp neste token, ou um deles não é válido.",
                "role": "O papel deste token é desconhecido: deve ser user ou admin.",
                "service": "Tokens de serviço são para a API. Entre com um token de usuário ou de admin.",
            },
        ),
        mine=MyCredits(
            title="Seus créditos",
            balance="Saldo",
            reserved="Reservado",
            available="Disponível",
            credits_unit="créditos",
            live_note="O saldo se atualiza sozinho conforme você usa créditos.",
            history="Histórico",
            when="Quando",
            kind="O quê",
            amount="Créditos",
            balance_after="Saldo depois",
            description="Detalhes",
            usage_title="Tokens usados por dia, últimos 30 dias",
            usage_desc="{total} tokens em 30 dias; o dia de maior uso teve {peak}.",
            tokens="Tokens",
            day="Dia",
            buy_title="Comprar créditos",
            buy="Comprar {name}",
            offer="{credits} créditos por {price}",
            sales_paused="As vendas estão pausadas no momento: uma compra pode ser recusada até que voltem.",
            no_packages="Nenhum pacote à venda.",
            refusals={
                "sales-paused": "As vendas estão pausadas no momento: nenhum pacote pode ser comprado. "
                "Tente mais tarde.",
                "not-found": "Este pacote não está mais à venda.",
                "payment-provider-error": "O provedor de pagamento não conseguiu abrir o checkout: {detail}",
                "payments-unavailable": "Os pagamentos não estão disponíveis agora. Tente mais tarde.",
            },
        ),
        lots=LotWords(
            title="Seus créditos por concessão",
            note="O uso consome primeiro os créditos que expiram antes, promocionais antes de pagos, "
            "depois os mais antigos.",
            lot="Concessão",
            kind="Tipo",
            granted="Concedidos",
            remaining="Restantes",
            expires="Expira",
            never="nunca",
            none="Nenhum crédito restante.",
            kinds={"paid": "Pago", "promo": "Promocional"},
        ),
    ),
}
