-- The audit trail (GET /api/admin/audit): one row for each event that records a change made by an admin, a
-- service or the system itself, other than usage. It is a view of the log like the others, kept by the
-- projection `audit` (projections/audit.py) and rebuilt from the events by `ledger rebuild audit`.
--
-- A row is keyed by its event's position, so replaying or rebuilding can never add it twice, and a
-- request replayed under its idempotency key writes no event and so adds no row. The list is read newest
-- first, by position, optionally for one actor or one action: each filter has an index in that order.
CREATE TABLE audit_log (
    position bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    actor_role text,
    action text NOT NULL,
    target text NOT NULL,
    old jsonb NOT NULL,
    new jsonb NOT NULL,
    reason text,
    request_id text
);

CREATE INDEX audit_log_actor_idx ON audit_log (actor, position);
CREATE INDEX audit_log_action_idx ON audit_log (action, position);

-- The user of each account: an adjustment's events name the account, and only its opening names the user.
CREATE TABLE audit_accounts (
    account_id uuid PRIMARY KEY,
    user_id text NOT NULL
);
