-- Totals over every account, kept by the accounts projection in the same transaction as the balances, so
-- the admin stats, the metrics and the oversell guard read one row instead of summing a million.
-- Credits in circulation count positive balances only: an account below zero (after a clawback) owes
-- credits, and cannot lower what the others can still spend.
CREATE TABLE account_totals (
    name text PRIMARY KEY CHECK (name = 'all'),
    credits_in_circulation_millicredits bigint NOT NULL CHECK (credits_in_circulation_millicredits >= 0),
    users_with_balance bigint NOT NULL CHECK (users_with_balance >= 0),
    reserved_millicredits bigint NOT NULL CHECK (reserved_millicredits >= 0)
);

-- The admin list pages newest or richest first with a (value, user_id) keyset in one direction, which
-- an ascending index serves by scanning backwards; the mixed-direction indexes of 0002 could not.
DROP INDEX user_credits_balance_idx;
DROP INDEX user_credits_updated_idx;
CREATE INDEX user_credits_balance_idx ON user_credits (balance_millicredits, user_id);
CREATE INDEX user_credits_updated_idx ON user_credits (updated_at, user_id);
