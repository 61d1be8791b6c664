-- No JIT compilation for this database's sessions.
--
-- Every query of the ledger reads or writes a few rows by key, in well under a millisecond of execution,
-- but the planner cannot know how many events follow a cached account version, so a batch's account
-- refresh (a LATERAL over the batch's accounts) is estimated in the millions of cost units and crosses
-- jit_above_cost: PostgreSQL then spent 140 ms compiling a query that runs in 10 ms (measured on a
-- batch of 1,000 accounts; from about 30 accounts a batch on). Sessions that start after this migration
-- get jit = off; an operator may still turn it on per session or per role.
-- Changing a database's settings needs its owner; where the migrating role is not, the ledger still
-- works, only slower on large batches, and the warning says so.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'could not turn JIT off for database %: run ALTER DATABASE ... SET jit = off as its owner',
        current_database();
END
$$;
