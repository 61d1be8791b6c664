-- Notifications: what the service tells people, created once from the log and delivered at least once.
--
-- These tables are facts, not views: `ledger rebuild` never touches them, so a rebuild never sends the
-- past again. A notification's id is derived from its cause (the event at a log position, or a window of
-- refused Stripe webhooks), and every insert is ON CONFLICT DO NOTHING, so replaying the log or running a
-- second notifier creates nothing twice. Contacts and webhook endpoints are settings of the deployment,
-- not events: a contact can be erased.

CREATE TABLE webhook_endpoints (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    event_types text[] NOT NULL,
    description text NOT NULL DEFAULT '',
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);

CREATE TABLE contacts (
    user_id text PRIMARY KEY,
    email text NOT NULL,
    locale text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notifications (
    id uuid PRIMARY KEY,
    -- The order of creation: the list's cursor, and the order of delivery for one user.
    seq bigserial UNIQUE NOT NULL,
    type text NOT NULL,
    user_id text,
    cause text NOT NULL,
    log_position bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- pending until every delivery is done; failed if one gave up; delivered otherwise (also with none).
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    recipients integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);

CREATE INDEX notifications_type_idx ON notifications (type, seq);
CREATE INDEX notifications_status_idx ON notifications (status, seq);

CREATE TABLE notification_deliveries (
    id uuid PRIMARY KEY,
    notification_id uuid NOT NULL REFERENCES notifications (id),
    seq bigint NOT NULL,
    type text NOT NULL,
    channel text NOT NULL CHECK (channel IN ('webhook', 'email')),
    endpoint_id uuid REFERENCES webhook_endpoints (id),
    recipient text,
    locale text,
    -- Deliveries with the same key go out one at a time in seq order (one user's, to one endpoint or
    -- address); null for alerts, which need no order.
    order_key text,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    -- Tries in the current round: a redelivery starts the schedule again.
    round_attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    last_error text,
    last_status integer,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notification_deliveries_order_idx ON notification_deliveries (order_key, seq) WHERE status = 'pending';
CREATE INDEX notification_deliveries_notification_idx ON notification_deliveries (notification_id);

-- Counters for /metrics, kept by the transactions that create and finish deliveries, so a scrape reads a
-- few rows instead of counting every delivery ever made. `name` is created, delivered, failed,
-- latency_sum_ms, or le_<ms> for the delivery-latency histogram's buckets (not cumulative here).
CREATE TABLE notification_counters (
    type text NOT NULL,
    channel text NOT NULL,
    name text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (type, channel, name)
);

-- The notifier's own state, at its own position: each account's available balance and whether its
-- low-balance notification is armed, the checkouts it has seen, and each user's recent hourly usage.
CREATE TABLE notifier_accounts (
    account_id uuid PRIMARY KEY,
    user_id text NOT NULL,
    balance_millicredits bigint NOT NULL,
    holds jsonb NOT NULL,
    low_balance_armed boolean NOT NULL,
    unusual_armed boolean NOT NULL
);

CREATE TABLE notifier_checkouts (
    checkout_id uuid PRIMARY KEY,
    session_id text NOT NULL,
    user_id text NOT NULL,
    package_id text NOT NULL
);

CREATE TABLE notifier_usage_hours (
    user_id text NOT NULL,
    hour timestamptz NOT NULL,
    tokens bigint NOT NULL,
    PRIMARY KEY (user_id, hour)
);

-- The billing settings the rules read, as of the notifier's position, and the position it went live at:
-- events at or before it (the history of a log that predates the notifier) notify nobody.
CREATE TABLE notifier_state (
    name text PRIMARY KEY CHECK (name = 'all'),
    settings jsonb NOT NULL,
    live_from bigint NOT NULL
);

INSERT INTO notifier_state (name, settings, live_from)
SELECT 'all', '{}'::jsonb, coalesce(max(notification_id), 0) FROM ledger_events;

-- Stripe webhooks refused or failing, for the alert that counts them per five minutes.
CREATE TABLE stripe_webhook_failures (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    reason text NOT NULL
);

CREATE INDEX stripe_webhook_failures_at_idx ON stripe_webhook_failures (at);

-- Idempotency of the writes that are not events (endpoints, contacts, redeliveries): the first answer,
-- stored in the write's own transaction.
CREATE TABLE setting_writes (
    principal text NOT NULL,
    operation text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    status_code integer NOT NULL,
    body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, operation, key)
);
