"""What the admin pages say, in each language they speak."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.web.locale import Locale


@dataclass(frozen=True, kw_only=True, slots=True)
class Label:
    """A figure's or a field's name, and the unit or hint written beside it."""

    name: str
    hint: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class AdminWords:
    dashboard_title: str
    figures: dict[str, Label]
    tokens_unit: str
    credits_unit: str
    sales_open: str
    sales_paused: str
    yes: str
    no: str
    paused_banner: str
    health_title: str
    health: dict[str, str]
    states: dict[str, str]
    lag: str
    gauge_title: str
    gauge_text: str
    activity_title: str
    active_users: Label
    hourly_title: str
    daily_title: str
    chart_desc: str
    hour: str
    day: str
    tokens: str
    movements_title: str
    movements_note: str
    user: str
    when: str
    kind: str
    amount: str
    balance_after: str
    description: str
    alerts_title: str
    no_alerts: str
    alerts: dict[str, str]
    users_title: str
    search: str
    search_hint: str
    sort: str
    sort_balance: str
    sort_activity: str
    search_button: str
    balance: str
    reserved: str
    available: str
    purchased: str
    used: str
    updated: str
    next_page: str
    first_page: str
    no_users: str
    user_title: str
    never: str
    holds_title: str
    hold: str
    held: str
    expires: str
    no_holds: str
    history_title: str
    user_usage_title: str
    adjust_title: str
    amount_field: Label
    reason_field: Label
    adjust_button: str
    config_title: str
    settings: dict[str, Label]
    save_settings: str
    audit_title: str
    audit_note: str
    by: str
    setting: str
    change: str
    no_changes: str
    packages_title: str
    package_id: Label
    package_name: Label
    package_credits: Label
    package_price: Label
    package_currency: Label
    package_active: Label
    save_package: str
    add_title: str
    add_button: str
    done: dict[str, str]
    errors_title: str
    refusals: dict[str, str]


_EN_SETTINGS: Final = {
    "api_monthly_limit_tokens": Label(name="API monthly limit", hint="tokens the upstream API allows a month"),
    "alert_threshold_percent": Label(name="Alert threshold", hint="percent of the monthly limit; sales pause past it"),
    "hourly_token_limit": Label(name="Hourly token limit", hint="tokens per user per rolling hour"),
    "daily_token_limit": Label(name="Daily token limit", hint="tokens per user per rolling day"),
    "min_balance_for_analysis_millicredits": Label(
        name="Minimum balance for an analysis", hint="millicredits (1 credit = 1,000)"
    ),
    "tokens_per_credit": Label(name="Tokens per credit", hint="how many tokens one credit pays for"),
    "welcome_credits": Label(name="Welcome credits", hint="credits a new user is given; 0 for none"),
}
_PT_SETTINGS: Final = {
    "api_monthly_limit_tokens": Label(name="Limite mensal da API", hint="tokens que a API permite por mês"),
    "alert_threshold_percent": Label(
        name="Limite de alerta", hint="percentual do limite mensal; as vendas pausam acima dele"
    ),
    "hourly_token_limit": Label(name="Limite de tokens por hora", hint="tokens por usuário na última hora"),
    "daily_token_limit": Label(name="Limite de tokens por dia", hint="tokens por usuário nas últimas 24 horas"),
    "min_balance_for_analysis_millicredits": Label(
        name="Saldo mínimo para uma análise", hint="milicréditos (1 crédito = 1.000)"
    ),
    "tokens_per_credit": Label(name="Tokens por crédito", hint="quantos tokens um crédito paga"),
    "welcome_credits": Label(name="Créditos de boas-vindas", hint="créditos dados a um novo usuário; 0 para nenhum"),
}

ADMIN_WORDS: Final[dict[Locale, AdminWords]] = {
    "en": AdminWords(
        dashboard_title="Credits dashboard",
        figures={
            "credits_in_circulation_millicredits": Label(name="Credits in circulation", hint="positive balances"),
            "potential_tokens": Label(name="Potential tokens", hint="what those credits can buy"),
            "api_monthly_limit_tokens": Label(name="API monthly limit", hint="tokens"),
            "api_usage_percent": Label(name="API usage", hint="potential tokens over the monthly limit"),
            "alert_threshold_percent": Label(name="Alert threshold", hint="of the monthly limit"),
            "sales_paused": Label(name="Sales", hint="the oversell guard"),
            "tokens_used_30d": Label(name="Tokens used", hint="last 30 days"),
            "analyses_30d": Label(name="Analyses", hint="last 30 days"),
            "users_with_balance": Label(name="Users with a balance"),
            "reserved_millicredits": Label(name="Credits on hold", hint="reserved by running analyses"),
            "as_of": Label(name="As of"),
        },
        tokens_unit="tokens",
        credits_unit="credits",
        sales_open="Open",
        sales_paused="Paused",
        yes="Yes",
        no="No",
        paused_banner="Sales are paused: the credits in circulation plus a package would pass the alert threshold "
        "of the API's monthly limit. Raise the limit or the threshold in the billing settings to sell again.",
        health_title="System health",
        health={"database": "Database", "redis": "Redis", "stripe": "Stripe"},
        states={
            "ok": "OK",
            "unavailable": "Unavailable",
            "not-configured": "Not configured",
            "configured": "Configured",
            "lagging": "Lagging",
        },
        lag="{events} events behind",
        gauge_title="API usage against the monthly limit",
        gauge_text="{percent} of {limit} tokens; the alert is at {threshold}.",
        activity_title="Last 30 days",
        active_users=Label(name="Active users", hint="a balance or hold moved"),
        hourly_title="Tokens used per hour, last 48 hours",
        daily_title="Tokens used per day, last 30 days",
        chart_desc="{total} tokens in all; the busiest bar has {peak}.",
        hour="Hour (UTC)",
        day="Day",
        tokens="Tokens",
        movements_title="Latest movements",
        movements_note="This list and the figures above refresh every 5 seconds.",
        user="User",
        when="When",
        kind="What",
        amount="Credits",
        balance_after="Balance after",
        description="Details",
        alerts_title="Active alerts",
        no_alerts="No active alerts.",
        alerts={
            "sales-paused": "Sales are paused by the oversell guard.",
            "api-usage": "API usage is at {percent} of the monthly limit; the alert threshold is {threshold}.",
            "view-lagging": "The {name} view is {events} events and {seconds} s behind the log.",
            "database": "The database does not answer.",
        },
        users_title="Users",
        search="User id starts with",
        search_hint="Leave empty to list everyone.",
        sort="Sort by",
        sort_balance="Balance, highest first",
        sort_activity="Last activity, newest first",
        search_button="Show",
        balance="Balance",
        reserved="On hold",
        available="Available",
        purchased="Bought, all time",
        used="Used, all time",
        updated="Last activity",
        next_page="Next page",
        first_page="First page",
        no_users="No user matches.",
        user_title="User {user_id}",
        never="never",
        holds_title="Open holds",
        hold="Hold",
        held="Credits held",
        expires="Expires",
        no_holds="No open holds.",
        history_title="History",
        user_usage_title="Tokens used per day, last 30 days",
        adjust_title="Adjust the balance",
        amount_field=Label(name="Credits to add", hint="Negative to remove; up to three decimals, e.g. 12.5 or -0.25."),
        reason_field=Label(name="Reason", hint="Required. It is recorded with your name."),
        adjust_button="Apply the adjustment",
        config_title="Billing settings",
        settings=_EN_SETTINGS,
        save_settings="Save the settings",
        audit_title="Changes to the settings",
        audit_note="Every change is an event in the log: who made it, when, and the value before and after.",
        by="By",
        setting="Setting",
        change="Old → new",
        no_changes="No setting has been changed yet.",
        packages_title="Packages",
        package_id=Label(name="Id", hint="letters, digits, - or _; cannot change later"),
        package_name=Label(name="Name"),
        package_credits=Label(name="Credits"),
        package_price=Label(name="Price", hint="e.g. 30.00"),
        package_currency=Label(name="Currency", hint="three capital letters, e.g. BRL"),
        package_active=Label(name="On sale"),
        save_package="Save {name}",
        add_title="Add a package",
        add_button="Add the package",
        done={
            "adjusted": "The adjustment was applied.",
            "settings": "The settings were saved.",
            "package-added": "The package was added.",
            "package-changed": "The package was saved.",
        },
        errors_title="Nothing was saved:",
        refusals={
            "integer": "must be a whole number, written with digits only",
            "credits": "must be a number of credits with at most three decimals, e.g. 12.5 or -0.25",
            "money": "must be an amount with at most two decimals, e.g. 30.00",
            "insufficient": "The removal is larger than the available balance of {available} credits.",
            "idempotency": "This form was already sent with other values. Reload the page and try again.",
            "not-found": "There is no such package.",
            "busy": "The ledger is busy. Please try again.",
        },
    ),
    "pt-BR": AdminWords(
        dashboard_title="Painel de créditos",
        figures={
            "credits_in_circulation_millicredits": Label(name="Créditos em circulação", hint="saldos positivos"),
            "potential_tokens": Label(name="Tokens potenciais", hint="o que esses créditos podem comprar"),
            "api_monthly_limit_tokens": Label(name="Limite mensal da API", hint="tokens"),
            "api_usage_percent": Label(name="Uso da API", hint="tokens potenciais sobre o limite mensal"),
            "alert_threshold_percent": Label(name="Limite de alerta", hint="do limite mensal"),
            "sales_paused": Label(name="Vendas", hint="a proteção contra venda excessiva"),
            "tokens_used_30d": Label(name="Tokens usados", hint="últimos 30 dias"),
            "analyses_30d": Label(name="Análises", hint="últimos 30 dias"),
            "users_with_balance": Label(name="Usuários com saldo"),
            "reserved_millicredits": Label(name="Créditos reservados", hint="por análises em andamento"),
            "as_of": Label(name="Em"),
        },
        tokens_unit="tokens",
        credits_unit="créditos",
        sales_open="Abertas",
        sales_paused="Pausadas",
        yes="Sim",
        no="Não",
        paused_banner="As vendas estão pausadas: os créditos em circulação mais um pacote passariam do limite de "
        "alerta do limite mensal da API. Aumente o limite ou o percentual de alerta nas configurações de cobrança "
        "para voltar a vender.",
        health_title="Saúde do sistema",
        health={"database": "Banco de dados", "redis": "Redis", "stripe": "Stripe"},
        states={
            "ok": "OK",
            "unavailable": "Indisponível",
            "not-configured": "Não configurado",
            "configured": "Configurado",
            "lagging": "Atrasada",
        },
        lag="{events} eventos atrás",
        gauge_title="Uso da API em relação ao limite mensal",
        gauge_text="{percent} de {limit} tokens; o alerta fica em {threshold}.",
        activity_title="Últimos 30 dias",
        active_users=Label(name="Usuários ativos", hint="saldo ou reserva mudou"),
        hourly_title="Tokens usados por hora, últimas 48 horas",
        daily_title="Tokens usados por dia, últimos 30 dias",
        chart_desc="{total} tokens no total; a barra mais alta tem {peak}.",
        hour="Hora (UTC)",
        day="Dia",
        tokens="Tokens",
        movements_title="Últimas movimentações",
        movements_note="Esta lista e os números acima se atualizam a cada 5 segundos.",
        user="Usuário",
        when="Quando",
        kind="O quê",
        amount="Créditos",
        balance_after="Saldo depois",
        description="Detalhes",
        alerts_title="Alertas ativos",
        no_alerts="Nenhum alerta ativo.",
        alerts={
            "sales-paused": "As vendas estão pausadas pela proteção contra venda excessiva.",
            "api-usage": "O uso da API está em {percent} do limite mensal; o limite de alerta é {threshold}.",
            "view-lagging": "A visão {name} está {events} eventos e {seconds} s atrás do log.",
            "database": "O banco de dados não responde.",
        },
        users_title="Usuários",
        search="Id do usuário começa com",
        search_hint="Deixe vazio para listar todos.",
        sort="Ordenar por",
        sort_balance="Saldo, maior primeiro",
        sort_activity="Última atividade, mais recente primeiro",
        search_button="Mostrar",
        balance="Saldo",
        reserved="Reservado",
        available="Disponível",
        purchased="Comprado, total",
        used="Usado, total",
        updated="Última atividade",
        next_page="Próxima página",
        first_page="Primeira página",
        no_users="Nenhum usuário encontrado.",
        user_title="Usuário {user_id}",
        never="nunca",
        holds_title="Reservas abertas",
        hold="Reserva",
        held="Créditos reservados",
        expires="Expira",
        no_holds="Nenhuma reserva aberta.",
        history_title="Histórico",
        user_usage_title="Tokens usados por dia, últimos 30 dias",
        adjust_title="Ajustar o saldo",
        amount_field=Label(
            name="Créditos a adicionar", hint="Negativo para remover; até três casas decimais, ex.: 12,5 ou -0,25."
        ),
        reason_field=Label(name="Motivo", hint="Obrigatório. Fica registrado com o seu nome."),
        adjust_button="Aplicar o ajuste",
        config_title="Configurações de cobrança",
        settings=_PT_SETTINGS,
        save_settings="Salvar as configurações",
        audit_title="Alterações nas configurações",
        audit_note="Cada alteração é um evento no log: quem fez, quando, e o valor antes e depois.",
        by="Por",
        setting="Configuração",
        change="Antigo → novo",
        no_changes="Nenhuma configuração foi alterada ainda.",
        packages_title="Pacotes",
        package_id=Label(name="Id", hint="letras, dígitos, - ou _; não muda depois"),
        package_name=Label(name="Nome"),
        package_credits=Label(name="Créditos"),
        package_price=Label(name="Preço", hint="ex.: 30,00"),
        package_currency=Label(name="Moeda", hint="três letras maiúsculas, ex.: BRL"),
        package_active=Label(name="À venda"),
        save_package="Salvar {name}",
        add_title="Adicionar um pacote",
        add_button="Adicionar o pacote",
        done={
            "adjusted": "O ajuste foi aplicado.",
            "settings": "As configurações foram salvas.",
            "package-added": "O pacote foi adicionado.",
            "package-changed": "O pacote foi salvo.",
        },
        errors_title="Nada foi salvo:",
        refusals={
            "integer": "deve ser um número inteiro, escrito só com dígitos",
            "credits": "deve ser um número de créditos com até três casas decimais, ex.: 12,5 ou -0,25",
            "money": "deve ser um valor com até duas casas decimais, ex.: 30,00",
            "insufficient": "A remoção é maior que o saldo disponível de {available} créditos.",
            "idempotency": "Este formulário já foi enviado com outros valores. Recarregue a página e tente de novo.",
            "not-found": "Esse pacote não existe.",
            "busy": "O ledger está ocupado. Tente de novo.",
        },
    ),
}
