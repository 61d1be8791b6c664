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
    notifications_title: str
    deliveries_title: str
    deliveries_note: str
    filter_type: str
    filter_status: str
    all_types: str
    all_statuses: str
    created: str
    status: str
    attempts: str
    last_error: str
    notification_types: dict[str, str]
    notification_statuses: dict[str, str]
    redeliver: str
    redeliver_label: str
    no_notifications: str
    endpoints_title: str
    endpoints_note: str
    endpoint_url: Label
    endpoint_events: Label
    all_events: str
    endpoint_description: Label
    add_endpoint_title: str
    add_endpoint_button: str
    delete_endpoint: str
    delete_endpoint_label: str
    no_endpoints: str
    shown_once_title: str
    shown_once_note: str
    signing_label: str
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
    "welcome_credits_ttl_days": Label(
        name="Welcome grant lifetime (days)", hint="days until welcome credits expire; 0: never"
    ),
    "low_balance_threshold_millicredits": Label(
        name="Low-balance notice (millicredits)", hint="a user is told once when their available credits fall below"
    ),
    "unusual_consumption_factor": Label(
        name="Unusual consumption factor", hint="an hour at this many times the user's hourly average of the week"
    ),
    "unusual_consumption_min_tokens": Label(
        name="Unusual consumption minimum (tokens)", hint="an hour below this is never unusual"
    ),
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
    "welcome_credits_ttl_days": Label(
        name="Validade da concessão de boas-vindas (dias)", hint="dias até os créditos expirarem; 0: nunca"
    ),
    "low_balance_threshold_millicredits": Label(
        name="Aviso de saldo baixo (milicréditos)", hint="o usuário é avisado uma vez quando o disponível fica abaixo"
    ),
    "unusual_consumption_factor": Label(
        name="Fator de consumo incomum", hint="uma hora com este múltiplo da média horária do usuário na semana"
    ),
    "unusual_consumption_min_tokens": Label(
        name="Mínimo de consumo incomum (tokens)", hint="uma hora abaixo disto nunca é incomum"
    ),
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
            "expired_millicredits_30d": Label(name="Credits expired", hint="lots past their expiry, last 30 days"),
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
        notifications_title="Notifications",
        deliveries_title="Notifications sent",
        deliveries_note="Newest first. Redelivering sends a notification again to every recipient, "
        "under the same webhook-id.",
        filter_type="Type",
        filter_status="Status",
        all_types="All types",
        all_statuses="All statuses",
        created="Created",
        status="Status",
        attempts="Attempts",
        last_error="Last error",
        notification_types={
            "credits.low_balance": "Low balance",
            "credits.purchased": "Credits purchased",
            "payment.failed": "Payment failed",
            "credits.clawed_back": "Credits clawed back",
            "credits.welcome_granted": "Welcome credits",
            "alert.api_usage_threshold": "Alert: API usage threshold",
            "alert.sales_paused": "Alert: sales paused",
            "alert.sales_resumed": "Alert: sales resumed",
            "alert.webhook_failures": "Alert: webhook failures",
            "alert.unusual_consumption": "Alert: unusual consumption",
        },
        notification_statuses={"pending": "Pending", "delivered": "Delivered", "failed": "Failed"},
        redeliver="Redeliver",
        redeliver_label="Redeliver the notification {id}",
        no_notifications="No notification matches.",
        endpoints_title="Webhook endpoints",
        endpoints_note="Each endpoint receives the types it lists, signed with its own secret (Standard Webhooks).",
        endpoint_url=Label(
            name="URL",
            hint="http or https; a private, loopback or link-local address is refused unless the deployment "
            "allows private networks",
        ),
        endpoint_events=Label(name="Event types", hint="the notification types to send; all includes future ones"),
        all_events="All types (*)",
        endpoint_description=Label(name="Description", hint="optional, up to 500 characters"),
        add_endpoint_title="Add an endpoint",
        add_endpoint_button="Add the endpoint",
        delete_endpoint="Delete",
        delete_endpoint_label="Delete the endpoint {url}",
        no_endpoints="No webhook endpoint yet.",
        shown_once_title="The endpoint was added",
        shown_once_note="Copy it now: it is shown this once and cannot be read here again.",
        signing_label="Its signing secret",
        done={
            "adjusted": "The adjustment was applied.",
            "settings": "The settings were saved.",
            "package-added": "The package was added.",
            "package-changed": "The package was saved.",
            "redelivered": "The notification is being delivered again.",
            "endpoint-deleted": "The endpoint was deleted; its pending deliveries will fail.",
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
            "private-address": "reaches {address}, a private, loopback or link-local address",
            "unknown-type": "{kind} is not a notification type",
            "no-types": "choose at least one type",
            "too-long": "must be at most {limit} characters",
            "nul": "must not contain the NUL character",
            "no-notification": "There is no such notification.",
            "no-endpoint": "There is no such endpoint; it may have been deleted already.",
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
            "expired_millicredits_30d": Label(name="Créditos expirados", hint="lotes vencidos, últimos 30 dias"),
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
        notifications_title="Notificações",
        deliveries_title="Notificações enviadas",
        deliveries_note="Mais recentes primeiro. Reenviar manda a notificação de novo a todos os destinatários, "
        "com o mesmo webhook-id.",
        filter_type="Tipo",
        filter_status="Situação",
        all_types="Todos os tipos",
        all_statuses="Todas as situações",
        created="Criada",
        status="Situação",
        attempts="Tentativas",
        last_error="Último erro",
        notification_types={
            "credits.low_balance": "Saldo baixo",
            "credits.purchased": "Créditos comprados",
            "payment.failed": "Pagamento falhou",
            "credits.clawed_back": "Créditos estornados",
            "credits.welcome_granted": "Créditos de boas-vindas",
            "alert.api_usage_threshold": "Alerta: limite de uso da API",
            "alert.sales_paused": "Alerta: vendas pausadas",
            "alert.sales_resumed": "Alerta: vendas retomadas",
            "alert.webhook_failures": "Alerta: falhas de webhook",
            "alert.unusual_consumption": "Alerta: consumo incomum",
        },
        notification_statuses={"pending": "Pendente", "delivered": "Entregue", "failed": "Falhou"},
        redeliver="Reenviar",
        redeliver_label="Reenviar a notificação {id}",
        no_notifications="Nenhuma notificação encontrada.",
        endpoints_title="Endpoints de webhook",
        endpoints_note="Cada endpoint recebe os tipos que lista, assinados com o seu próprio segredo "
        "(Standard Webhooks).",
        endpoint_url=Label(
            name="URL",
            hint="http ou https; um endereço privado, de loopback ou link-local é recusado, a menos que a "
            "instalação permita redes privadas",
        ),
        endpoint_events=Label(
            name="Tipos de evento", hint="os tipos de notificação a enviar; todos inclui os que vierem depois"
        ),
        all_events="Todos os tipos (*)",
        endpoint_description=Label(name="Descrição", hint="opcional, até 500 caracteres"),
        add_endpoint_title="Adicionar um endpoint",
        add_endpoint_button="Adicionar o endpoint",
        delete_endpoint="Excluir",
        delete_endpoint_label="Excluir o endpoint {url}",
        no_endpoints="Nenhum endpoint de webhook ainda.",
        shown_once_title="O endpoint foi adicionado",
        shown_once_note="Copie agora: ele aparece só desta vez e não pode ser lido aqui de novo.",
        signing_label="O seu segredo de assinatura",
        done={
            "adjusted": "O ajuste foi aplicado.",
            "settings": "As configurações foram salvas.",
            "package-added": "O pacote foi adicionado.",
            "package-changed": "O pacote foi salvo.",
            "redelivered": "A notificação está sendo entregue de novo.",
            "endpoint-deleted": "O endpoint foi excluído; as entregas pendentes para ele vão falhar.",
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
            "private-address": "chega a {address}, um endereço privado, de loopback ou link-local",
            "unknown-type": "{kind} não é um tipo de notificação",
            "no-types": "escolha ao menos um tipo",
            "too-long": "deve ter no máximo {limit} caracteres",
            "nul": "não pode conter o caractere NUL",
            "no-notification": "Essa notificação não existe.",
            "no-endpoint": "Esse endpoint não existe; talvez já tenha sido excluído.",
        },
    ),
}
