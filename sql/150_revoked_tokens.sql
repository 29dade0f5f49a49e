-- Revoked ops tokens and console sessions, by token id (`jti`), shared by every process
-- (gateway.security.tokens). A row is needed only until the token it names would have
-- expired anyway: revoking prunes the rows past that point, and the token lifetime bound
-- (OPS_TOKEN_MAX_TTL_SECONDS) keeps the list short.
CREATE TABLE payment_service.revoked_tokens (
    token_id    VARCHAR(128) PRIMARY KEY,
    expires_at  TIMESTAMPTZ  NOT NULL,
    revoked_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    revoked_by  VARCHAR(255) NOT NULL,
    reason      VARCHAR(64)  NOT NULL
);
CREATE INDEX idx_revoked_tokens_expires ON payment_service.revoked_tokens (expires_at);
