-- Differences nobody could resolve automatically (a provider status the poller cannot
-- map or apply, a payment the provider does not know): one open row per reference and
-- reason, counted again each time it is seen, closed by an operator.
CREATE TABLE payment_service.payment_reviews (
    id               BIGSERIAL    PRIMARY KEY,
    reference_number VARCHAR(255) NOT NULL,
    payment_id       UUID,
    source           VARCHAR(32)  NOT NULL,
    reason           VARCHAR(64)  NOT NULL,
    internal_status  VARCHAR(20),
    provider_status  VARCHAR(100),
    details          JSONB,
    occurrences      INTEGER      NOT NULL DEFAULT 1,
    created_at       TIMESTAMPTZ  NOT NULL DEFAULT now(),
    last_seen_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    resolved_at      TIMESTAMPTZ,
    resolved_by      VARCHAR(255)
);
CREATE UNIQUE INDEX idx_payment_reviews_open
    ON payment_service.payment_reviews (reference_number, reason) WHERE resolved_at IS NULL;
CREATE INDEX idx_payment_reviews_created ON payment_service.payment_reviews (created_at DESC);
