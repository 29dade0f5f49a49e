-- paygate schema. Timestamps we generate are timestamptz; payment_date keeps seed 004's
-- TIMESTAMP (a business date, always UTC by convention).
CREATE SCHEMA IF NOT EXISTS payment_service;

-- Payments, partitioned by month of payment_date. A unique key on a partitioned table
-- must include the partition key, so uniqueness of reference_number lives in
-- payment_references, not here.
CREATE TABLE payment_service.payments (
    id                  UUID          NOT NULL,
    reference_number    VARCHAR(255)  NOT NULL,
    loan_account_number VARCHAR(20)   NOT NULL,
    cif                 VARCHAR(20)   NOT NULL,
    amount              DECIMAL(15,2) NOT NULL CHECK (amount > 0),
    payment_date        TIMESTAMP     NOT NULL,
    payment_channel     VARCHAR(100),
    source              VARCHAR(50)   NOT NULL CHECK (source IN ('webhook', 'staging')),
    metadata            JSONB,
    status              VARCHAR(20)   NOT NULL DEFAULT 'succeeded'
        CHECK (status IN ('pending', 'succeeded', 'failed', 'reversed', 'refunded')),
    status_updated_at   TIMESTAMPTZ   NOT NULL DEFAULT now(),
    provider_event_at   TIMESTAMPTZ,
    version             INTEGER       NOT NULL DEFAULT 1,
    created_at          TIMESTAMPTZ   NOT NULL DEFAULT now(),
    PRIMARY KEY (id, payment_date)
) PARTITION BY RANGE (payment_date);

CREATE TABLE payment_service.payments_default PARTITION OF payment_service.payments DEFAULT;

CREATE INDEX idx_payments_reference ON payment_service.payments (reference_number);
CREATE INDEX idx_payments_loan_account ON payment_service.payments (loan_account_number, payment_date DESC);
CREATE INDEX idx_payments_cif ON payment_service.payments (cif, payment_date DESC);
CREATE INDEX idx_payments_created_at ON payment_service.payments (created_at);
CREATE INDEX idx_payments_open_status ON payment_service.payments (status_updated_at)
    WHERE status = 'pending';

-- The only source of truth for "have we seen this reference".
CREATE TABLE payment_service.payment_references (
    reference_number VARCHAR(255) PRIMARY KEY,
    payment_id       UUID         NOT NULL,
    payment_date     TIMESTAMP    NOT NULL,
    payload_hash     VARCHAR(64)  NOT NULL,
    created_at       TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_payment_refs_created ON payment_service.payment_references (created_at);

-- Raw verified deliveries, for audit and replay; partitioned by month of receipt.
CREATE TABLE payment_service.webhook_events (
    id               BIGSERIAL,
    received_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    channel          VARCHAR(100) NOT NULL,
    delivery_id      VARCHAR(255),
    reference_number VARCHAR(255),
    payment_id       UUID,
    outcome          VARCHAR(20)  NOT NULL,
    body             BYTEA        NOT NULL,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE TABLE payment_service.webhook_events_default
    PARTITION OF payment_service.webhook_events DEFAULT;
CREATE INDEX idx_webhook_events_reference ON payment_service.webhook_events (reference_number);

-- Transactional outbox: written in the same transaction as the payment, relayed to Kafka.
CREATE TABLE payment_service.outbox (
    id               BIGSERIAL    PRIMARY KEY,
    event_id         UUID         NOT NULL UNIQUE,
    event_type       VARCHAR(64)  NOT NULL,
    topic            VARCHAR(255) NOT NULL,
    key              VARCHAR(255) NOT NULL,
    payload          BYTEA        NOT NULL,
    attempts         INTEGER      NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    last_error       TEXT,
    dead_lettered_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_outbox_pending ON payment_service.outbox (id) WHERE dead_lettered_at IS NULL;
CREATE INDEX idx_outbox_key ON payment_service.outbox (key) WHERE dead_lettered_at IS NULL;

-- Filled by the ETL (seed 004); the staging processor marks rows it has handled.
CREATE TABLE payment_service.payment_staging (
    id                  BIGSERIAL PRIMARY KEY,
    reference_number    VARCHAR(255)  NOT NULL,
    loan_account_number VARCHAR(20)   NOT NULL,
    cif                 VARCHAR(20)   NOT NULL,
    amount              DECIMAL(15,2) NOT NULL,
    payment_date        TIMESTAMP     NOT NULL,
    payment_channel     VARCHAR(100),
    metadata            JSONB,
    processed           BOOLEAN       DEFAULT FALSE,
    processed_at        TIMESTAMP,
    created_at          TIMESTAMP     DEFAULT now(),
    -- paygate's bookkeeping: what happened to the row (recorded, duplicate, error).
    result              VARCHAR(20),
    payment_id          UUID,
    error               TEXT
);
CREATE INDEX idx_staging_unprocessed ON payment_service.payment_staging (id)
    WHERE processed IS NOT TRUE;

CREATE TABLE payment_service.staging_process_log (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    batch_start_id    BIGINT      NOT NULL,
    batch_end_id      BIGINT      NOT NULL,
    total_records     INTEGER     NOT NULL,
    processed_records INTEGER     DEFAULT 0,
    duplicate_records INTEGER     DEFAULT 0,
    error_records     INTEGER     DEFAULT 0,
    status            VARCHAR(50) DEFAULT 'processing',
    attempt           INTEGER     NOT NULL DEFAULT 1,
    duration_ms       DOUBLE PRECISION,
    started_at        TIMESTAMPTZ DEFAULT now(),
    completed_at      TIMESTAMPTZ,
    error_details     JSONB
);
CREATE INDEX idx_staging_log_started ON payment_service.staging_process_log (started_at DESC);

-- Every state change: created, status change, conflict, reconciliation fix, ops action.
CREATE TABLE payment_service.audit_log (
    id               BIGSERIAL,
    created_at       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    actor            VARCHAR(255) NOT NULL,
    action           VARCHAR(64)  NOT NULL,
    reference_number VARCHAR(255),
    payment_id       UUID,
    details          JSONB,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE payment_service.audit_log_default PARTITION OF payment_service.audit_log DEFAULT;
CREATE INDEX idx_audit_reference ON payment_service.audit_log (reference_number);

-- Status updates that arrived before their payment; applied when it appears.
CREATE TABLE payment_service.pending_status_updates (
    id                BIGSERIAL    PRIMARY KEY,
    reference_number  VARCHAR(255) NOT NULL,
    status            VARCHAR(20)  NOT NULL,
    provider_event_at TIMESTAMPTZ,
    channel           VARCHAR(100),
    received_at       TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_pending_status_reference ON payment_service.pending_status_updates (reference_number);

CREATE TABLE payment_service.reconciliation_runs (
    id              UUID         PRIMARY KEY DEFAULT gen_random_uuid(),
    kind            VARCHAR(20)  NOT NULL DEFAULT 'statement',
    source          VARCHAR(500),
    actor           VARCHAR(255),
    status          VARCHAR(20)  NOT NULL DEFAULT 'running',
    period_start    TIMESTAMP,
    period_end      TIMESTAMP,
    total_lines     INTEGER      NOT NULL DEFAULT 0,
    malformed_lines INTEGER      NOT NULL DEFAULT 0,
    summary         JSONB,
    errors          JSONB,
    started_at      TIMESTAMPTZ  NOT NULL DEFAULT now(),
    completed_at    TIMESTAMPTZ
);

CREATE TABLE payment_service.reconciliation_items (
    id               BIGSERIAL     PRIMARY KEY,
    run_id           UUID          NOT NULL REFERENCES payment_service.reconciliation_runs (id)
                                   ON DELETE CASCADE,
    category         VARCHAR(32)   NOT NULL,
    reference_number VARCHAR(255)  NOT NULL,
    payment_id       UUID,
    line_number      INTEGER,
    statement_amount DECIMAL(15,2),
    internal_amount  DECIMAL(15,2),
    difference       DECIMAL(15,2),
    statement_status VARCHAR(20),
    internal_status  VARCHAR(20),
    details          JSONB
);
CREATE INDEX idx_recon_items_run ON payment_service.reconciliation_items (run_id, category);
