-- When the status poller may ask the provider about a payment again: a claim that keeps
-- several poller instances (and consecutive rounds) from asking about the same payment.
CREATE TABLE payment_service.status_poll_state (
    reference_number VARCHAR(255) PRIMARY KEY,
    next_poll_at     TIMESTAMPTZ  NOT NULL,
    attempts         INTEGER      NOT NULL DEFAULT 1,
    last_result      VARCHAR(32),
    last_polled_at   TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX idx_status_poll_next ON payment_service.status_poll_state (next_poll_at);
