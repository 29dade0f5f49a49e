-- The operator's side (issue 20): refused deliveries kept for replay, replays, the
-- exception workflow on reconciliation items and payment reviews, and the indexes the
-- ops API's queries run on.

-- Why a verified delivery was refused (the 4xx body), when it was.
ALTER TABLE payment_service.webhook_events ADD COLUMN error JSONB;
-- Refused and ignored deliveries by outcome, newest first. Partial: an accepted delivery
-- (created, duplicate, status outcomes) pays the predicate, never an index entry.
CREATE INDEX idx_webhook_events_refused
    ON payment_service.webhook_events (outcome, received_at, id)
    WHERE outcome IN ('invalid', 'invalid_json', 'ignored', 'conflict');

-- Every replay of a stored delivery: who, when, and what the pipeline answered.
CREATE TABLE payment_service.delivery_replays (
    id             BIGSERIAL    PRIMARY KEY,
    delivery_id    BIGINT       NOT NULL,
    actor          VARCHAR(255) NOT NULL,
    status         INTEGER      NOT NULL,
    outcome        VARCHAR(32)  NOT NULL,
    payment_id     UUID,
    answer         JSONB        NOT NULL,
    created_at     TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_delivery_replays_delivery ON payment_service.delivery_replays (delivery_id, id);

-- Payment search: statuses other than succeeded (the common one) by recording time.
-- Partial, so recording a succeeded payment adds no entry.
CREATE INDEX idx_payments_uncommon_status ON payment_service.payments (created_at)
    WHERE status <> 'succeeded';

-- The exception workflow: open -> assigned -> resolved, with a reason-coded resolution.
ALTER TABLE payment_service.reconciliation_items
    ADD COLUMN state                 VARCHAR(16)  NOT NULL DEFAULT 'open',
    ADD COLUMN assignee              VARCHAR(255),
    ADD COLUMN assigned_at           TIMESTAMPTZ,
    ADD COLUMN resolution            VARCHAR(32),
    ADD COLUMN resolution_note       TEXT,
    ADD COLUMN resolution_payment_id UUID,
    ADD COLUMN resolved_at           TIMESTAMPTZ,
    ADD COLUMN resolved_by           VARCHAR(255),
    ADD COLUMN created_at            TIMESTAMPTZ  NOT NULL DEFAULT now();
ALTER TABLE payment_service.payment_reviews
    ADD COLUMN state                 VARCHAR(16)  NOT NULL DEFAULT 'open',
    ADD COLUMN assignee              VARCHAR(255),
    ADD COLUMN assigned_at           TIMESTAMPTZ,
    ADD COLUMN resolution            VARCHAR(32),
    ADD COLUMN resolution_note       TEXT,
    ADD COLUMN resolution_payment_id UUID;
UPDATE payment_service.payment_reviews SET state = 'resolved' WHERE resolved_at IS NOT NULL;

-- Exceptions (not the matched items) oldest first, all of them and the unresolved queue.
CREATE INDEX idx_recon_items_exceptions ON payment_service.reconciliation_items (created_at, id)
    WHERE category NOT IN ('matched', 'matched_with_fee');
CREATE INDEX idx_recon_items_unresolved ON payment_service.reconciliation_items (created_at, id)
    WHERE state <> 'resolved' AND category NOT IN ('matched', 'matched_with_fee');
CREATE INDEX idx_recon_items_reference ON payment_service.reconciliation_items (reference_number);
CREATE INDEX idx_payment_reviews_queue ON payment_service.payment_reviews (created_at, id)
    WHERE resolved_at IS NULL;
CREATE INDEX idx_payment_reviews_age ON payment_service.payment_reviews (created_at, id);
CREATE INDEX idx_payment_reviews_reference ON payment_service.payment_reviews (reference_number);
-- "Assigned to me": only assigned rows have an entry.
CREATE INDEX idx_recon_items_assignee ON payment_service.reconciliation_items (assignee, created_at, id)
    WHERE assignee IS NOT NULL;
CREATE INDEX idx_payment_reviews_assignee ON payment_service.payment_reviews (assignee, created_at, id)
    WHERE assignee IS NOT NULL;

CREATE TABLE payment_service.exception_comments (
    id         BIGSERIAL    PRIMARY KEY,
    kind       VARCHAR(16)  NOT NULL,  -- item (reconciliation_items) | review (payment_reviews)
    item_id    BIGINT       NOT NULL,
    actor      VARCHAR(255) NOT NULL,
    body       TEXT         NOT NULL,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_exception_comments_item ON payment_service.exception_comments (kind, item_id, id);

-- Runs newest first.
CREATE INDEX idx_recon_runs_started ON payment_service.reconciliation_runs (started_at, id);

-- A payment's events still in the outbox (pending or dead-lettered; published ones are
-- deleted). Planned like sql/005's counts, without sequential or bitmap scans, so the
-- lookup keeps to idx_outbox_key and the tiny idx_outbox_dead whatever the statistics.
CREATE FUNCTION payment_service.outbox_events_of(event_key text)
RETURNS TABLE (id bigint, event_id uuid, event_type varchar, attempts integer,
               last_error text, dead_lettered_at timestamptz, created_at timestamptz,
               payload bytea)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
    SELECT id, event_id, event_type, attempts, last_error, dead_lettered_at, created_at, payload
    FROM payment_service.outbox WHERE key = event_key AND dead_lettered_at IS NULL
    UNION ALL
    SELECT id, event_id, event_type, attempts, last_error, dead_lettered_at, created_at, payload
    FROM payment_service.outbox WHERE key = event_key AND dead_lettered_at IS NOT NULL
$$;
