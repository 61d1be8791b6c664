-- The event log becomes tamper-evident: hash-chained and append-only (issue 15).
--
-- Chain. Every event's `hash` is SHA-256 over the previous event's hash and the event itself:
--
--     hash(n) = sha256(hash(n - 1) || int8(notification_id) || uuid(originator_id) || int8(originator_version)
--                      || int4(byte length of topic, -1 if null) || topic as UTF-8
--                      || int4(byte length of state, -1 if null) || state)
--
-- with 32 zero bytes as the hash before the first event, integers big-endian (PostgreSQL's binary send
-- format). projections/chain.py computes the same bytes in Python; `ledger verify` recomputes the whole
-- chain with it and names the first event that no longer matches.
--
-- "The previous event" is well defined because every writer holds the table's EXCLUSIVE lock while it
-- inserts: LedgerRecorder._lock_table (the library's lock) takes it before each insert, and so does any
-- COPY into this table (bench/history.py). So events are inserted one transaction at a time in position
-- order, and the last row is the previous event. The statement trigger below takes the same lock
-- itself, so a writer that forgot it waits (or fails on a deadlock) instead of forking the chain; for the
-- ledger, which already holds it, that costs a lookup in the backend's own lock table.
--
-- The hash is computed in the insert itself, by a row trigger, without a second round trip: the trigger
-- reads the last row's hash through the notification_id index. Measured on this machine (2 vCPU, loaded):
-- a statement-level AFTER trigger over a transition table, writing hashes to a side table, costs about as
-- much at the ledger's batch sizes (its fixed cost per statement is higher, its cost per row lower) and
-- needs a second table to guard; caching the previous hash in a transaction-local setting saves little.
--
-- Append-only. UPDATE and DELETE on ledger_events fail for every role, superusers included. Both triggers
-- are ENABLE ALWAYS, so `SET session_replication_role = replica` does not skip them; only an explicit
-- `ALTER TABLE ... DISABLE TRIGGER` by the table's owner or a superuser does, and that is the threat the
-- chain answers: an event changed, removed or moved afterwards breaks it. TRUNCATE is not blocked (the
-- test suite empties tables with it); it needs the TRUNCATE privilege, which only the table's owner (and
-- superusers) hold unless granted. A log truncated and written again from the start is a valid chain:
-- only the head (position and hash, which `ledger verify` prints) recorded outside the database shows it.
-- Nor can the chain catch someone who can disable the triggers and recompute every hash after their
-- change: that needs the head recorded elsewhere too.
--
-- Existing history: the chain is computed once here, in position order, under the same lock. Each row
-- is rewritten once (PostgreSQL's UPDATE writes a new row version), and ledger_events' autovacuum
-- threshold is very high, so run VACUUM ledger_events after migrating a large history.

ALTER TABLE ledger_events ADD COLUMN hash bytea;

-- STABLE, not IMMUTABLE, because convert_to is; as a single SQL expression the planner inlines it.
CREATE FUNCTION ledger_event_hash(
    previous bytea, notification_id bigint, originator_id uuid, originator_version bigint, topic text, state bytea
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(
        previous
        || int8send(notification_id)
        || uuid_send(originator_id)
        || int8send(originator_version)
        || int4send(coalesce(octet_length(convert_to(topic, 'UTF8')), -1))
        || coalesce(convert_to(topic, 'UTF8'), ''::bytea)
        || int4send(coalesce(octet_length(state), -1))
        || coalesce(state, ''::bytea)
    )
$$;

DO $$
DECLARE
    previous bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
    event record;
    positions bigint[] := '{}';
    hashes bytea[] := '{}';
    n integer := 0;
BEGIN
    LOCK TABLE ledger_events IN EXCLUSIVE MODE;
    FOR event IN
        SELECT notification_id, originator_id, originator_version, topic, state
        FROM ledger_events ORDER BY notification_id
    LOOP
        previous := ledger_event_hash(
            previous, event.notification_id, event.originator_id, event.originator_version, event.topic, event.state
        );
        n := n + 1;
        positions[n] := event.notification_id;
        hashes[n] := previous;
        IF n = 10000 THEN
            UPDATE ledger_events AS e SET hash = chained.hash
            FROM unnest(positions, hashes) AS chained (notification_id, hash)
            WHERE e.notification_id = chained.notification_id;
            positions := '{}';
            hashes := '{}';
            n := 0;
        END IF;
    END LOOP;
    UPDATE ledger_events AS e SET hash = chained.hash
    FROM unnest(positions, hashes) AS chained (notification_id, hash)
    WHERE e.notification_id = chained.notification_id;
END
$$;

CREATE FUNCTION ledger_events_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE ledger_events IN EXCLUSIVE MODE;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_events_lock BEFORE INSERT ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_lock();

-- Rows of one insert are chained in the order the statement inserts them, which is position order:
-- each row's notification_id is drawn as it is inserted, and the query below sees the rows before it.
-- A previous event without a hash (written while this trigger was disabled) is a break `ledger verify`
-- reports; the chain goes on from the zero hash after it, so the events after it stay protected.
CREATE FUNCTION ledger_events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous bytea;
    previous_position bigint;
BEGIN
    SELECT e.hash, e.notification_id INTO previous, previous_position
    FROM ledger_events AS e ORDER BY e.notification_id DESC LIMIT 1;
    IF previous_position >= NEW.notification_id THEN
        RAISE EXCEPTION 'ledger_events: an event at position % cannot follow position %',
            NEW.notification_id, previous_position;
    END IF;
    NEW.hash := ledger_event_hash(
        coalesce(previous, '\x0000000000000000000000000000000000000000000000000000000000000000'),
        NEW.notification_id, NEW.originator_id, NEW.originator_version, NEW.topic, NEW.state
    );
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_events_chain BEFORE INSERT ON ledger_events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_chain();

CREATE FUNCTION ledger_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_events is append-only: % is not allowed', TG_OP
        USING HINT = 'Events are never changed or removed; a correction is a new event.';
END
$$;

CREATE TRIGGER ledger_events_append_only BEFORE UPDATE OR DELETE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only();

ALTER TABLE ledger_events ENABLE ALWAYS TRIGGER ledger_events_lock;
ALTER TABLE ledger_events ENABLE ALWAYS TRIGGER ledger_events_chain;
ALTER TABLE ledger_events ENABLE ALWAYS TRIGGER ledger_events_append_only;
