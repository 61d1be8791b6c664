-- The payments view gains what a support agent asks about a purchase: the credits it was for, the money
-- refunded so far, and the disputes it had; and the checkout stream's id, which its events name.
ALTER TABLE stripe_payments
    ADD COLUMN checkout_id uuid NOT NULL UNIQUE,
    ADD COLUMN credits_millicredits bigint NOT NULL DEFAULT 0 CHECK (credits_millicredits >= 0),
    ADD COLUMN refunded_amount_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_amount_minor >= 0),
    ADD COLUMN disputes jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX stripe_payments_user_idx ON stripe_payments (user_id, created_at DESC);
CREATE INDEX stripe_payments_intent_idx ON stripe_payments (payment_intent_id);
