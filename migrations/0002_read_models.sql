-- Read models projected from the event log. Each projection writes its rows and its position in one
-- transaction; the CHECK constraints are a second guard behind the ledger's own rules.

CREATE TABLE projection_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    last_event_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_credits (
    user_id text PRIMARY KEY,
    account_id uuid NOT NULL UNIQUE,
    balance_millicredits bigint NOT NULL,
    reserved_millicredits bigint NOT NULL CHECK (reserved_millicredits >= 0),
    lifetime_purchased_millicredits bigint NOT NULL CHECK (lifetime_purchased_millicredits >= 0),
    lifetime_used_millicredits bigint NOT NULL CHECK (lifetime_used_millicredits >= 0),
    updated_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX user_credits_balance_idx ON user_credits (balance_millicredits DESC, user_id);
CREATE INDEX user_credits_updated_idx ON user_credits (updated_at DESC, user_id);

CREATE TABLE credit_holds (
    reservation_id text PRIMARY KEY,
    user_id text NOT NULL,
    held_millicredits bigint NOT NULL CHECK (held_millicredits >= 0),
    expires_at timestamptz NOT NULL
);
CREATE INDEX credit_holds_user_idx ON credit_holds (user_id);
CREATE INDEX credit_holds_expiry_idx ON credit_holds (expires_at);

-- One row per movement. amount_millicredits is the signed change to the balance; for a reservation
-- or a release (which move no credits) it is the signed change to the available balance.
CREATE TABLE credit_transactions (
    position bigint NOT NULL,
    seq smallint NOT NULL,
    id text NOT NULL,
    user_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('purchase', 'grant', 'debit', 'reservation', 'settlement', 'release',
                                       'adjustment', 'refund', 'dispute')),
    amount_millicredits bigint NOT NULL,
    balance_after_millicredits bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    reference text,
    description text,
    PRIMARY KEY (position, seq)
);
CREATE INDEX credit_transactions_user_idx ON credit_transactions (user_id, position DESC, seq DESC);
CREATE INDEX credit_transactions_user_time_idx ON credit_transactions (user_id, occurred_at DESC);

CREATE TABLE token_usage_logs (
    position bigint PRIMARY KEY,
    user_id text NOT NULL,
    usage_id text NOT NULL,
    tokens bigint NOT NULL CHECK (tokens >= 0),
    input_tokens bigint,
    output_tokens bigint,
    model text,
    agent_id text,
    analysis_id text,
    amount_millicredits bigint NOT NULL CHECK (amount_millicredits >= 0),
    tokens_per_credit bigint NOT NULL,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX token_usage_logs_user_idx ON token_usage_logs (user_id, occurred_at);
CREATE INDEX token_usage_logs_time_idx ON token_usage_logs (occurred_at);

-- Hourly and daily roll-ups per user; user_id '' holds the whole system's.
CREATE TABLE usage_rollups (
    user_id text NOT NULL,
    granularity text NOT NULL CHECK (granularity IN ('hour', 'day')),
    bucket_start timestamptz NOT NULL,
    tokens bigint NOT NULL CHECK (tokens >= 0),
    amount_millicredits bigint NOT NULL CHECK (amount_millicredits >= 0),
    events bigint NOT NULL CHECK (events >= 0),
    analyses bigint NOT NULL DEFAULT 0 CHECK (analyses >= 0),
    PRIMARY KEY (user_id, granularity, bucket_start)
);

CREATE TABLE billing_config (
    key text PRIMARY KEY,
    value bigint NOT NULL,
    updated_by text,
    updated_at timestamptz NOT NULL
);

CREATE TABLE credit_packages (
    id text PRIMARY KEY,
    name text NOT NULL,
    credits bigint NOT NULL CHECK (credits > 0),
    price_amount_minor bigint NOT NULL CHECK (price_amount_minor > 0),
    currency text NOT NULL,
    active boolean NOT NULL,
    stripe_price_id text,
    updated_at timestamptz NOT NULL
);

CREATE TABLE stripe_payments (
    checkout_session_id text PRIMARY KEY,
    user_id text NOT NULL,
    package_id text NOT NULL,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    payment_method text,
    status text NOT NULL,
    payment_intent_id text,
    charge_id text,
    credits_granted_millicredits bigint NOT NULL DEFAULT 0,
    credits_refunded_millicredits bigint NOT NULL DEFAULT 0,
    credits_disputed_millicredits bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
