-- The dead-letter gauge counts outbox rows WHERE dead_lettered_at IS NOT NULL every few
-- seconds in every process. Without an index that is a sequential scan of the whole
-- outbox, and the outbox is largest exactly when Kafka is down: measured at 5,000/s with
-- no relay running, these scans grew Postgres' CPU per payment by half within a minute.
-- Dead letters are rare, so this index stays tiny.
CREATE INDEX idx_outbox_dead ON payment_service.outbox (id) WHERE dead_lettered_at IS NOT NULL;
