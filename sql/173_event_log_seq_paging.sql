-- The pages of a large interval by seq (issue 31, the ceiling): a round that cannot take
-- a lane's interval (done, target] in one page reads the interval once by (lane, txid),
-- learns its largest seq, and reads each later page as the range (after_seq, that seq] of
-- this index. Before, every page read the whole interval again and sorted it: at 512
-- connections the intervals grew faster than the relay could page through them.
--
-- Partial on a predicate every row meets (seq starts at 1) that only the paging read
-- states: no other read of the log can be planned on it. The log is never analyzed, so
-- to the planner a lane's rows by (lane, seq) cost the same as the interval by (lane,
-- txid), and a read of the interval could walk the lane's whole history in seq order.
CREATE INDEX idx_event_log_lane_seq ON payment_service.event_log (lane, seq) WHERE seq > 0;

-- The rows of transactions a cursor saw in progress: one index probe per transaction.
-- As `txid = ANY (ARRAY(SELECT pg_snapshot_xip(...)))` (sql/170) PostgreSQL 15 and 16
-- used only the lane as the index condition and filtered the lane's whole generation,
-- so every read cost more as the log grew (18 used it as an index condition; the
-- relay's round had the same read).
CREATE OR REPLACE FUNCTION payment_service.event_log_unpublished(cap integer, only_lane smallint DEFAULT NULL)
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
            SELECT x.* FROM pg_snapshot_xip(c.done) AS r(txid)
            CROSS JOIN LATERAL (
                SELECT * FROM payment_service.event_log e
                WHERE e.lane = c.lane AND e.txid = r.txid OFFSET 0
            ) x
        ) u
        ORDER BY u.seq LIMIT cap
    ) e
    WHERE only_lane IS NULL OR c.lane = only_lane
$$;
