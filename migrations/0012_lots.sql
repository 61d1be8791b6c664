-- Grants as lots. The accounts projection keeps each account's open lots (a lot with nothing left, or whose
-- expiry is recorded, has no row), and the expired credits in its roll-ups. The balance read subtracts the
-- lots past their expiry whose expiry is not recorded yet, so a lot stops counting at once.
CREATE TABLE credit_lots (
    user_id text NOT NULL,
    lot_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('paid', 'promo')),
    granted_millicredits bigint NOT NULL CHECK (granted_millicredits > 0),
    remaining_millicredits bigint NOT NULL CHECK (remaining_millicredits > 0),
    expires_at timestamptz,
    granted_at timestamptz NOT NULL,
    reference text,
    -- The grant's position in the log: the last tie-break of the consumption order.
    position bigint NOT NULL,
    PRIMARY KEY (user_id, lot_id)
);
CREATE INDEX credit_lots_expiry_idx ON credit_lots (expires_at) WHERE expires_at IS NOT NULL;

-- A lot's expiry is a movement of the history too.
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_kind_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_kind_check CHECK (kind IN ('purchase', 'grant',
    'debit', 'reservation', 'settlement', 'release', 'adjustment', 'refund', 'dispute', 'expiry'));

ALTER TABLE usage_rollups ADD COLUMN expired_millicredits bigint NOT NULL DEFAULT 0
    CHECK (expired_millicredits >= 0);

-- History recorded before lots has lots too (one per past grant, consumed in order), which only a replay
-- of the events can tell: the accounts projection starts again from the first event. Until it has caught up,
-- reads that wait for a position wait for it; `ledger verify` reports it as behind.
LOCK TABLE projection_positions IN EXCLUSIVE MODE;
TRUNCATE account_totals, user_credits, credit_holds, credit_transactions, token_usage_logs, usage_rollups,
    account_activity;
UPDATE projection_positions SET position = 0, last_event_at = NULL WHERE name = 'accounts';

-- Snapshots are a cache of the events. One taken before lots knows only the balance, not the grants: it
-- goes, and the account is loaded from its events, one lot per past grant; new snapshots are taken as the
-- account is written again. (Should one remain, it loads as a single paid lot with the same balance.)
DELETE FROM ledger_snapshots
WHERE convert_from(state, 'UTF8')::jsonb ->> 'topic' = 'ledger.CreditAccount'
  AND NOT (convert_from(state, 'UTF8')::jsonb -> 'state' ? 'class_version');
