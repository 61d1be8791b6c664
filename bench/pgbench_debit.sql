-- The raw PostgreSQL ceiling for one debit: what the ledger's write does, as bare SQL, one transaction.
-- Lock the account's balance row, append the movement (a row shaped like an event: the account, its
-- next version, a kind and a payload of about the ledger event's size, a global sequence number),
-- then update the balance. Run by bench/run.py over the same accounts, clients and database as the HTTP
-- scenarios: pgbench -n -M prepared -c 64 -j 2 -T <seconds> -f bench/pgbench_debit.sql bench
\set aid random(1, :accounts)
\set tokens random(1, 1000)
BEGIN;
SELECT balance, version AS ver FROM bench_balances WHERE id = :aid::int FOR UPDATE \gset
INSERT INTO bench_movements (account_id, version, kind, state)
VALUES (:aid::int, :ver::bigint + 1, 'CreditsDebited',
        convert_to(json_build_object('debit_id', gen_random_uuid(), 'tokens', :tokens::int, 'amount_millicredits', :tokens::int,
                                     'tokens_per_credit', 1000, 'model', NULL, 'occurred_at', now())::text, 'UTF8'));
UPDATE bench_balances SET balance = balance - :tokens::bigint, version = version + 1 WHERE id = :aid::int;
END;
