-- The ledger's append, one statement per transaction: the table lock (so commit order is position order),
-- the notification to the log's followers, and the insert of the transaction's events, returning their
-- positions in insert order. The same rows as before; the writer sends one statement instead of four.
-- ``lock_timeout`` bounds the wait for the table lock, as the store's own statements did (SET LOCAL).
CREATE FUNCTION ledger_append_events(
    lock_timeout text, ids uuid[], versions bigint[], topics text[], states bytea[]
)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    LOCK TABLE ledger_events IN EXCLUSIVE MODE;
    NOTIFY ledger_events;
    RETURN QUERY
        WITH inserted AS (
            INSERT INTO ledger_events (originator_id, originator_version, topic, state)
            SELECT * FROM unnest(ids, versions, topics, states)
            RETURNING notification_id
        )
        SELECT notification_id FROM inserted;
END
$$;
