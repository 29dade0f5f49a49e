"""The event log's SQL: appending events (every writer goes through `append_*_sql`) and
reading them back as the relay and the operators see them.

The log (sql/170) holds rows that are never updated or deleted: one per recording
transaction and lane with the `payment.recorded` events of its winners (ids, dates and
the status each was recorded with; the payload is built from `payments` at publish time,
gateway.db.events_sql), or one per event with a stored payload (status changes,
reconciliation runs). Each carries its transaction id and a sequence number; the relay
reads a lane by snapshot intervals (workers/outbox.py). Events that failed to publish
move to `payment_service.outbox` (retries, the events held behind them, dead letters).
"""

from __future__ import annotations

from gateway.db.events_sql import (
    event_payload_sql,
    iso_z_sql,
    outbox_payload_sql,
    recorded_event_id_sql,
    sql_literal,
)
from gateway.domain.events import PAYMENT_RECORDED

EVENT_LANES = 8  # sql/170's payment_service.event_lane() masks with EVENT_LANES - 1


def append_recorded_sql(*, won: str, status: str, topic: str, traceparent: str = "NULL") -> str:
    """An INSERT (for a data-modifying CTE) of the `payment.recorded` events of the rows of
    `won` (columns payment_id, ref, payment_date): one log row per lane. `status`, `topic`
    and `traceparent` (each event's trace context for Kafka, sql/172) are SQL expressions
    (over the row `w`, or parameters). With tracing off every traceparent is NULL and the
    row stores no array at all (bytes per payment are the log's budget)."""
    tp = f"({traceparent})::text"
    return f"""INSERT INTO payment_service.event_log
        (lane, event_type, topic, payment_ids, payment_dates, statuses, traceparents)
    SELECT payment_service.event_lane(w.ref), {sql_literal(PAYMENT_RECORDED)}, {topic},
           array_agg(w.payment_id), array_agg(w.payment_date), array_agg(({status})::text),
           CASE WHEN count({tp}) > 0 THEN array_agg({tp}) END
    FROM {won} w GROUP BY 1"""


def append_event_sql(*, event_id: str, event_type: str, topic: str, key: str, payload: str) -> str:
    """An INSERT (a statement, or a data-modifying CTE) of one event with its stored payload;
    each argument is an SQL expression (usually a parameter)."""
    return f"""INSERT INTO payment_service.event_log
        (lane, event_type, topic, event_id, key, payload)
    VALUES (payment_service.event_lane({key}), {event_type}, {topic}, {event_id}, {key},
            {payload})"""


# The payload of the log's lean element `u` (payment_id, payment_date, status) of the log
# row `t`, with its event id `i.event_id`: built from the payment exactly as the lean
# outbox row's (gateway.db.events_sql), the row's created_at being the event's time.
_LEAN_PAYLOAD = f"""LEFT JOIN LATERAL (
        SELECT lean.ref, {
    event_payload_sql(
        "lean",
        source="lean.source",
        status="lean.status",
        now_iso=iso_z_sql("(lean.created_at AT TIME ZONE 'UTC')"),
    )
} AS payload
        FROM (
            SELECT i.event_id, p.id AS payment_id, p.reference_number AS ref,
                   p.loan_account_number AS account, p.cif, p.amount, p.currency,
                   p.payment_date, p.payment_at, p.payment_channel AS channel, p.metadata,
                   p.source, u.status, t.created_at
            FROM payment_service.payments p
            WHERE p.id = u.payment_id AND p.payment_date = u.payment_date
        ) lean
    ) b ON true"""


def expanded_sql(rows: str) -> str:
    """The events of the log rows `rows` (a relation with the log's columns), one row each:
    lane, seq, idx (the element's position, 0 for a stored event), event_id, event_type,
    topic, key, payload (NULL if a recorded payment is gone), payment_id, payment_date,
    status, created_at, traceparent."""
    return f"""
    SELECT t.lane, t.seq, 0::bigint AS idx, t.event_id, t.event_type, t.topic, t.key,
           t.payload, NULL::uuid AS payment_id, NULL::timestamp AS payment_date,
           NULL::text AS status, t.created_at, t.traceparents[1] AS traceparent
    FROM {rows} t WHERE t.payment_ids IS NULL
    UNION ALL
    SELECT t.lane, t.seq, u.idx, i.event_id, t.event_type, t.topic,
           coalesce(b.ref, u.payment_id::text), b.payload, u.payment_id, u.payment_date,
           u.status, t.created_at, t.traceparents[u.idx::int]
    FROM {rows} t
    CROSS JOIN LATERAL unnest(t.payment_ids, t.payment_dates, t.statuses) WITH ORDINALITY
        AS u(payment_id, payment_date, status, idx)
    CROSS JOIN LATERAL (SELECT {recorded_event_id_sql("u.payment_id")} AS event_id) i
    {_LEAN_PAYLOAD}
    WHERE t.payment_ids IS NOT NULL"""


def queued_events_sql(cap: int = 100_000) -> str:
    """Every event not yet published, with the payload the relay publishes for it (columns
    event_id, event_type, topic, key, payload, attempts, dead_lettered_at, created_at,
    traceparent, and outbox_id, NULL for an event still in the log): the log's rows past
    their lane's cursor (up to `cap` rows a lane) and everything in the outbox, dead
    letters included.
    For reading events, e.g. `SELECT * FROM (<this>) e WHERE key = $1`."""
    return f"""
SELECT NULL::bigint AS outbox_id, e.event_id, e.event_type, e.topic, e.key, e.payload,
       0 AS attempts, NULL::timestamptz AS dead_lettered_at, e.created_at, e.traceparent
FROM ({expanded_sql(f"payment_service.event_log_unpublished({int(cap)})")}) e
UNION ALL
SELECT o.id, o.event_id, o.event_type, o.topic, o.key, {outbox_payload_sql()},
       o.attempts, o.dead_lettered_at, o.created_at, o.traceparent
FROM payment_service.outbox o"""


# -- the relay's round ------------------------------------------------------------------

# One statement: for each lane the relay owns, the next page of the interval between its
# cursor `done` and `target` (a new snapshot: the statement's own when the lane has none
# pinned), in seq order, up to $6 events (whole log rows, at least one); and the retries
# that are due, of each key only its oldest undead outbox row (per-key order), from a
# window of the $7 oldest.
#
# Parameters: $1 lanes, $2 their cursors, $3 their pinned targets (NULL: a new one), $4
# the seq reached in the pinned interval, $5 log rows read per lane at most, $6 events per
# lane at most, $7 the retry window, $8 the largest seq of the pinned interval (NULL: not
# known yet). Rows back: kind 'lane' (lane, target, complete, last_seq, seq_hi, and the
# statement's own snapshot `now`), 'log' (an event of the log: held when an undead outbox
# row of its key exists, so it must queue behind it) and 'retry' (an outbox row).
#
# Every access is an index range. A lane's first page of an interval reads the interval
# by (lane, txid): from the cursor's xmax up to the target's, and the cursor's
# in-progress transactions one probe each (a nested loop: as `txid = ANY (array)`,
# PostgreSQL 15 and 16 filtered the lane's whole generation instead). It is sorted by
# seq, and its largest seq comes back as seq_hi. The interval's rows are fixed once its
# target is (every transaction the target shows had ended), so each later page is the
# range (after_seq, seq_hi] of (lane, seq), of which only rows of transactions running
# at either snapshot are not taken: a page costs what it takes, not the interval again
# (sql/173). The payment by primary key; the outbox by its partial indexes. The relay's
# session turns sequential and bitmap scans off so that no plan depends on the
# statistics of a table that is never analyzed.
ROUND_SQL = f"""
WITH lanes AS MATERIALIZED (
    SELECT l.lane, l.done, coalesce(l.target, pg_current_snapshot()) AS target, l.after_seq,
           l.seq_hi
    FROM unnest($1::int2[], $2::pg_snapshot[], $3::pg_snapshot[], $4::int8[], $8::int8[])
        AS l(lane, done, target, after_seq, seq_hi)
), page AS MATERIALIZED (
    SELECT e.*, count(*) OVER (PARTITION BY e.lane) AS rows_read,
           sum(coalesce(cardinality(e.payment_ids), 1))
               OVER (PARTITION BY e.lane ORDER BY e.seq) AS upto
    FROM lanes l CROSS JOIN LATERAL (
        SELECT * FROM ((
            SELECT u.*, max(u.seq) OVER () AS seq_hi FROM (
                SELECT * FROM payment_service.event_log e
                WHERE l.seq_hi IS NULL AND e.lane = l.lane
                  AND e.txid >= pg_snapshot_xmax(l.done)
                  AND e.txid < pg_snapshot_xmax(l.target)
                UNION ALL
                SELECT x.* FROM pg_snapshot_xip(l.done) AS r(txid)
                CROSS JOIN LATERAL (
                    SELECT * FROM payment_service.event_log e
                    WHERE l.seq_hi IS NULL AND e.lane = l.lane AND e.txid = r.txid OFFSET 0
                ) x
            ) u
            WHERE pg_visible_in_snapshot(u.txid, l.target) AND u.seq > l.after_seq
            ORDER BY u.seq LIMIT $5
        ) UNION ALL (
            SELECT e.*, l.seq_hi FROM payment_service.event_log e
            WHERE l.seq_hi IS NOT NULL AND e.lane = l.lane AND e.seq > 0  -- sql/173's index
              AND e.seq > l.after_seq AND e.seq <= l.seq_hi
              AND pg_visible_in_snapshot(e.txid, l.target)
              AND NOT pg_visible_in_snapshot(e.txid, l.done)
            ORDER BY e.seq LIMIT $5
        )) p
    ) e
), taken AS MATERIALIZED (
    SELECT * FROM page WHERE upto - coalesce(cardinality(payment_ids), 1) < $6
), win AS MATERIALIZED (
    SELECT id, key, next_attempt_at <= now() AS due,
           row_number() OVER (PARTITION BY key ORDER BY id) AS nth
    FROM (SELECT id, key, next_attempt_at FROM payment_service.outbox
          WHERE dead_lettered_at IS NULL ORDER BY id LIMIT $7) w
), events AS ({expanded_sql("taken")}
)
SELECT 'lane' AS kind, l.lane, l.target, pg_current_snapshot() AS now,
       NOT EXISTS (SELECT 1 FROM page p WHERE p.lane = l.lane AND (p.rows_read >= $5
                   OR p.upto - coalesce(cardinality(p.payment_ids), 1) >= $6)) AS complete,
       (SELECT max(t.seq) FROM taken t WHERE t.lane = l.lane) AS last_seq,
       (SELECT max(p.seq_hi) FROM page p WHERE p.lane = l.lane) AS seq_hi,
       NULL::bigint AS outbox_id, NULL::bigint AS seq, NULL::bigint AS idx,
       NULL::uuid AS event_id, NULL::text AS event_type, NULL::text AS topic,
       NULL::text AS key, NULL::bytea AS payload, NULL::uuid AS payment_id,
       NULL::timestamp AS payment_date, NULL::text AS status, NULL::timestamptz AS created_at,
       0 AS attempts, false AS held, NULL::text AS traceparent
FROM lanes l
UNION ALL
SELECT 'log', e.lane, NULL, NULL, NULL, NULL, NULL, NULL, e.seq, e.idx, e.event_id,
       e.event_type, e.topic, e.key, e.payload, e.payment_id, e.payment_date, e.status,
       e.created_at, 0, h.held IS NOT NULL, e.traceparent
FROM events e
-- one probe per event (a LATERAL is never turned into a scan of the whole outbox)
LEFT JOIN LATERAL (
    SELECT true AS held FROM payment_service.outbox o
    WHERE o.key = e.key AND o.dead_lettered_at IS NULL LIMIT 1
) h ON true
UNION ALL
SELECT 'retry', payment_service.event_lane(o.key), NULL, NULL, NULL, NULL, NULL, o.id,
       NULL, NULL, o.event_id, o.event_type, o.topic, o.key, {outbox_payload_sql()}, o.payment_id,
       o.payment_date, o.status, o.created_at, o.attempts, false, o.traceparent
FROM payment_service.outbox o
WHERE o.id = ANY (ARRAY(SELECT id FROM win WHERE due AND nth = 1
                        AND payment_service.event_lane(key) = ANY ($1::int2[])))
  AND o.next_attempt_at <= now()
"""

# The round's bookkeeping, one statement: acknowledged retries deleted, failed ones
# rescheduled (or dead-lettered), failed and held log events moved to the outbox in their
# order (ids ascending, so per key in seq order), and the lanes' cursors appended.
SETTLE_SQL = """
WITH acked AS (
    DELETE FROM payment_service.outbox WHERE id = ANY ($1::bigint[])
), failed AS (
    UPDATE payment_service.outbox o
    SET attempts = f.attempts, next_attempt_at = now() + make_interval(secs => f.delay),
        last_error = f.error, dead_lettered_at = CASE WHEN f.dead THEN now() END
    FROM unnest($2::bigint[], $3::int[], $4::float8[], $5::text[], $6::bool[])
        AS f(id, attempts, delay, error, dead)
    WHERE o.id = f.id
), moved AS (
    INSERT INTO payment_service.outbox
        (event_id, event_type, topic, key, payload, payment_id, payment_date, status,
         created_at, traceparent, attempts, next_attempt_at, last_error, dead_lettered_at)
    SELECT m.event_id, m.event_type, m.topic, m.key,
           CASE WHEN m.payment_id IS NULL THEN m.payload END, m.payment_id, m.payment_date,
           m.status, m.created_at, m.traceparent, m.attempts,
           now() + make_interval(secs => m.delay), m.error, CASE WHEN m.dead THEN now() END
    FROM unnest($7::uuid[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::uuid[],
                $13::timestamp[], $14::text[], $15::timestamptz[], $16::text[], $17::int[],
                $18::float8[], $19::text[], $20::bool[]) WITH ORDINALITY
        AS m(event_id, event_type, topic, key, payload, payment_id, payment_date, status,
             created_at, traceparent, attempts, delay, error, dead, n)
    ORDER BY m.n
), cursors AS (
    INSERT INTO payment_service.event_cursors (lane, done, target, after_seq, relay)
    SELECT c.lane, c.done, c.target, c.after_seq, $25
    FROM unnest($21::int2[], $22::pg_snapshot[], $23::pg_snapshot[], $24::int8[])
        AS c(lane, done, target, after_seq)
)
SELECT 1
"""

# The relay's session: its plans must not depend on statistics (see ROUND_SQL), and its
# commits need not wait for the WAL flush: a cursor or retry lost in a crash is an event
# published again, which at-least-once allows (consumers drop it by event_id).
SESSION_SQL = "SET enable_seqscan = off; SET enable_bitmapscan = off; SET synchronous_commit = off"

LANE_CURSORS_SQL = (
    "SELECT lane, done, target, after_seq FROM payment_service.event_lane_cursors()"
    " WHERE lane = ANY ($1::int2[])"
)
