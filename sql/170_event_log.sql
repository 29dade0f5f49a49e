-- The event log (issue 31): events are appended, never updated or deleted, and read by
-- snapshot intervals (docs/architecture.md, "The event log").
--
-- A row is either one recording transaction's `payment.recorded` events of one lane (the
-- arrays: payment id, payment_date and the status it was recorded with; the payload is
-- built from `payments` when the relay reads it) or one event with its stored payload
-- (status changes, reconciliation runs). Every row carries the id of the transaction that
-- wrote it (`txid`) and a number drawn from one sequence while that transaction held the
-- lock of the event's key (`seq`): so of two events of one key the later committed has
-- the larger seq, and a snapshot that shows the later one shows the earlier one too.
--
-- The relay owning a lane remembers the last snapshot whose events it published (its
-- cursor, in event_cursors) and reads what is visible in a new snapshot and was not in
-- that one: rows whose txid is at or past the cursor's xmax, or in its list of
-- transactions then in progress. Both are index ranges on (lane, txid), so a round costs
-- what it reads, whatever old rows, dead tuples or open transactions exist.
--
-- Space: three generations by time (ten minutes each); the relay TRUNCATEs the one about
-- to come round again once every cursor shows all of its rows. No UPDATE, no DELETE, no
-- VACUUM of the log.
--
-- `payment_service.outbox` stays, as the table of events that failed at least once (with
-- their attempts and backoff), the events held behind them (per-key order) and the dead
-- letters: small, and what `paygate dlq` and /api/v1/dlq read. Rows queued in it when
-- this migration runs are published from it, in their key's order, before later events
-- of the same key.

CREATE SEQUENCE payment_service.event_seq;

-- Lanes: a key's events always go to the same lane; one relay at a time owns a lane.
-- Eight, fixed here (gateway/db/event_log.py's EVENT_LANES must agree).
CREATE FUNCTION payment_service.event_lane(key text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashtext(key) & 7)::smallint $$;

CREATE FUNCTION payment_service.event_generation() RETURNS smallint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT ((extract(epoch FROM statement_timestamp())::bigint / 600) % 3)::smallint $$;

CREATE TABLE payment_service.event_log (
    gen           SMALLINT    NOT NULL DEFAULT payment_service.event_generation(),
    lane          SMALLINT    NOT NULL,
    txid          XID8        NOT NULL DEFAULT pg_current_xact_id(),
    seq           BIGINT      NOT NULL DEFAULT nextval('payment_service.event_seq'),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp(),
    event_type    TEXT        NOT NULL,
    topic         TEXT        NOT NULL,
    payment_ids   UUID[],
    payment_dates TIMESTAMP[],
    statuses      TEXT[],
    event_id      UUID,
    key           TEXT,
    payload       BYTEA,
    CONSTRAINT event_log_lean_or_stored CHECK (
        (payment_ids IS NOT NULL AND payment_dates IS NOT NULL AND statuses IS NOT NULL)
        OR (event_id IS NOT NULL AND key IS NOT NULL AND payload IS NOT NULL)
    )
) PARTITION BY LIST (gen);

-- Never vacuumed for space (nothing dies in it); a partition is TRUNCATEd, which also
-- resets its frozen xid, long before wraparound could force a vacuum.
CREATE TABLE payment_service.event_log_0 PARTITION OF payment_service.event_log
    FOR VALUES IN (0) WITH (autovacuum_enabled = off);
CREATE TABLE payment_service.event_log_1 PARTITION OF payment_service.event_log
    FOR VALUES IN (1) WITH (autovacuum_enabled = off);
CREATE TABLE payment_service.event_log_2 PARTITION OF payment_service.event_log
    FOR VALUES IN (2) WITH (autovacuum_enabled = off);

CREATE INDEX idx_event_log_lane_txid ON payment_service.event_log (lane, txid);

-- A lane's cursor, appended after each round that moved it (never updated: a row updated
-- hundreds of times a second is a chain of dead versions while anything holds the
-- horizon). The newest row of a lane is its cursor: `done` shows every event of the lane
-- that is published; `target` and `after_seq` say how far a round got into a larger
-- interval (done, target]. Old rows are deleted in bulk by the relay's maintenance.
CREATE TABLE payment_service.event_cursors (
    lane      SMALLINT    NOT NULL,
    id        BIGINT      GENERATED ALWAYS AS IDENTITY,
    done      PG_SNAPSHOT NOT NULL,
    target    PG_SNAPSHOT,
    after_seq BIGINT      NOT NULL DEFAULT 0,
    relay     TEXT,
    at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (lane, id)
);

-- Every lane starts here: anything committed from now on is published from the log.
INSERT INTO payment_service.event_cursors (lane, done, relay)
SELECT lane, pg_current_snapshot(), 'migration 170' FROM generate_series(0, 7) AS lane;

-- The newest cursor of every lane.
CREATE FUNCTION payment_service.event_lane_cursors()
RETURNS TABLE (lane smallint, done pg_snapshot, target pg_snapshot, after_seq bigint)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
    SELECT l.lane::smallint, c.done, c.target, c.after_seq
    FROM generate_series(0, 7) AS l(lane)
    CROSS JOIN LATERAL (
        SELECT c.done, c.target, c.after_seq FROM payment_service.event_cursors c
        WHERE c.lane = l.lane ORDER BY c.id DESC LIMIT 1
    ) c
$$;

-- The log rows no cursor has passed yet (at most `cap` per lane; of one lane only, if
-- given): for counts and for reading what is queued. Same two index ranges as the
-- relay's read.
CREATE FUNCTION payment_service.event_log_unpublished(cap integer, only_lane smallint DEFAULT NULL)
RETURNS SETOF payment_service.event_log
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
    SELECT e.* FROM payment_service.event_lane_cursors() c
    CROSS JOIN LATERAL (
        SELECT * FROM (
            SELECT * FROM payment_service.event_log e
            WHERE e.lane = c.lane AND e.txid >= pg_snapshot_xmax(c.done)
            UNION ALL
            SELECT * FROM payment_service.event_log e
            WHERE e.lane = c.lane AND e.txid = ANY (ARRAY(SELECT pg_snapshot_xip(c.done)))
        ) u
        ORDER BY u.seq LIMIT cap
    ) e
    WHERE only_lane IS NULL OR c.lane = only_lane
$$;

-- Events not yet published, counted up to `cap` (the log's and the outbox's undead rows),
-- and when the oldest of them was written.
CREATE FUNCTION payment_service.events_pending(cap integer)
RETURNS TABLE (pending bigint, oldest timestamptz)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
    WITH log AS (
        SELECT coalesce(sum(coalesce(cardinality(payment_ids), 1)), 0) AS n,
               min(created_at) AS oldest
        FROM payment_service.event_log_unpublished(cap)
    )
    SELECT least(log.n + payment_service.outbox_pending(cap), cap)::bigint,
           least(log.oldest, (SELECT created_at FROM payment_service.outbox
                              WHERE dead_lettered_at IS NULL ORDER BY id LIMIT 1))
    FROM log
$$;

COMMENT ON TABLE payment_service.outbox IS
    'Events that failed to publish at least once (attempts, backoff), the events of their '
    'keys held behind them, and the dead letters. Everything else is in event_log.';
