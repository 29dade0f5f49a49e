-- Reconciliation an accountant would sign (issues 34 and 27): one rule for references,
-- a statement's identity, one open item per difference across runs, the payment's currency.

-- The currency a payment was recorded in, where its channel sends one (ISO 4217). Issue 32
-- adds the same column; IF NOT EXISTS lets the two migrations run in either order.
ALTER TABLE payment_service.payments ADD COLUMN IF NOT EXISTS currency varchar(3);

-- gateway.domain.references.normalize_reference in SQL: trim what Python's str.strip()
-- calls whitespace, then Unicode normalisation form C (tests keep the two in step).
CREATE OR REPLACE FUNCTION payment_service.normalize_reference(ref text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT btrim(normalize(btrim(ref, U&'\0009\000A\000B\000C\000D\001C\001D\001E\001F\0020\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000'), NFC),
                 U&'\0009\000A\000B\000C\000D\001C\001D\001E\001F\0020\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000')
$$;

-- Recorded references the rule would now write differently (a trailing space, a decomposed
-- accent): found here, for an operator to review (`SELECT * FROM
-- payment_service.reference_normalisation_report`; the function finds them again at any
-- time, e.g. after restoring older rows). They are not rewritten: a
-- reference is the payment's identity downstream, and the normalised form may already
-- belong to another payment (`collides_with`).
CREATE TABLE payment_service.reference_normalisation_report (
    reference_number VARCHAR(255) PRIMARY KEY,
    normalised       TEXT         NOT NULL,
    payment_id       UUID         NOT NULL,
    payment_date     TIMESTAMP    NOT NULL,
    collides_with    UUID,
    found_at         TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE FUNCTION payment_service.unnormalised_references()
RETURNS TABLE (reference_number varchar, normalised text, payment_id uuid,
               payment_date timestamp, collides_with uuid)
LANGUAGE sql STABLE
AS $$
    SELECT r.reference_number, n.normalised, r.payment_id, r.payment_date, o.payment_id
    FROM payment_service.payment_references r
    CROSS JOIN LATERAL (SELECT payment_service.normalize_reference(r.reference_number)) n(normalised)
    LEFT JOIN payment_service.payment_references o ON o.reference_number = n.normalised
    WHERE n.normalised IS DISTINCT FROM r.reference_number
$$;
INSERT INTO payment_service.reference_normalisation_report
    (reference_number, normalised, payment_id, payment_date, collides_with)
SELECT * FROM payment_service.unnormalised_references();

-- A statement's identity: a digest over the file's sha256, the options it is read and
-- matched with, the provider and the period the uploader named. While an import of a
-- statement is running or completed, importing it again returns that run.
ALTER TABLE payment_service.reconciliation_runs
    ADD COLUMN statement_digest   VARCHAR(64),
    ADD COLUMN statement_identity VARCHAR(64),
    ADD COLUMN provider           VARCHAR(100),
    ADD COLUMN statement_bytes    BIGINT;
CREATE UNIQUE INDEX uq_recon_runs_statement ON payment_service.reconciliation_runs (statement_identity)
    WHERE statement_identity IS NOT NULL AND status IN ('running', 'completed');

-- One open item per difference (reference + category) across runs: a later run's item that
-- finds it again points at it (`open_item_id`) and stays out of the queue; the open item
-- counts the sightings, and says when a later run covering the reference no longer found it.
ALTER TABLE payment_service.reconciliation_items
    ADD COLUMN open_item_id     BIGINT,
    ADD COLUMN seen_count       INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN last_seen_run_id UUID,
    ADD COLUMN last_seen_at     TIMESTAMPTZ,
    ADD COLUMN cleared_run_id   UUID,
    ADD COLUMN cleared_at       TIMESTAMPTZ;

-- Existing copies (the same statement imported several times) become sightings of the
-- oldest unresolved item of their reference and category.
WITH ranked AS (
    SELECT id, run_id, created_at,
           first_value(id) OVER (PARTITION BY reference_number, category ORDER BY id) AS first
    FROM payment_service.reconciliation_items
    WHERE state <> 'resolved' AND category NOT IN ('matched', 'matched_with_fee')
), linked AS (
    UPDATE payment_service.reconciliation_items i SET open_item_id = r.first
    FROM ranked r WHERE i.id = r.id AND r.id <> r.first
    RETURNING r.first, i.run_id, i.created_at
)
UPDATE payment_service.reconciliation_items o
SET seen_count = 1 + s.n, last_seen_run_id = s.run_id, last_seen_at = s.at
FROM (SELECT first, count(*) AS n, max(created_at) AS at,
             (array_agg(run_id ORDER BY created_at DESC))[1] AS run_id
      FROM linked GROUP BY first) s
WHERE o.id = s.first;

-- The queue's partial indexes now leave the sightings out.
DROP INDEX payment_service.idx_recon_items_exceptions;
DROP INDEX payment_service.idx_recon_items_unresolved;
CREATE INDEX idx_recon_items_exceptions ON payment_service.reconciliation_items (created_at, id)
    WHERE category NOT IN ('matched', 'matched_with_fee') AND open_item_id IS NULL;
CREATE INDEX idx_recon_items_unresolved ON payment_service.reconciliation_items (created_at, id)
    WHERE state <> 'resolved' AND category NOT IN ('matched', 'matched_with_fee')
      AND open_item_id IS NULL;
-- The open item of a reference and category, for the next run to find.
CREATE INDEX idx_recon_items_open ON payment_service.reconciliation_items (reference_number, category)
    WHERE state <> 'resolved' AND category NOT IN ('matched', 'matched_with_fee')
      AND open_item_id IS NULL;
