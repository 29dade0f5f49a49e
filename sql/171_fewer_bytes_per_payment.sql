-- Fewer bytes per payment (issue 31). Every recorded payment writes a reference, a
-- payment, an audit row and a raw delivery; what they cost in index entries and WAL is
-- decided here (measured with `python -m bench.write_volume`, per relation).
--
-- 1. The raw deliveries and the audit rows were indexed by reference number: a random
--    key, so every insert lands on a random leaf page, and after each checkpoint the
--    first change of each such page writes a full 8 kB image of it to the WAL. They are
--    indexed by payment id instead (UUIDv7: time-ordered, so inserts append at the right
--    edge, where the pages are already written). Rows that belong to no payment (a
--    refused delivery, a status update parked before its payment, a dead letter's replay)
--    keep a reference index of their own, small because they are rare. A payment's
--    deliveries and audit rows are found by its id, or by reference among those.
DROP INDEX payment_service.idx_webhook_events_reference;
CREATE INDEX idx_webhook_events_payment ON payment_service.webhook_events (payment_id);
CREATE INDEX idx_webhook_events_unmatched ON payment_service.webhook_events (reference_number)
    WHERE payment_id IS NULL;

DROP INDEX payment_service.idx_audit_reference;
CREATE INDEX idx_audit_payment ON payment_service.audit_log (payment_id);
CREATE INDEX idx_audit_unmatched ON payment_service.audit_log (reference_number)
    WHERE payment_id IS NULL;

-- 2. The business hash is 32 bytes of SHA-256, stored as 64 hexadecimal characters until
--    now. (Rewrites the table: on a large one, run this migration in a quiet hour.)
ALTER TABLE payment_service.payment_references
    ALTER COLUMN payload_hash TYPE BYTEA USING (
        CASE WHEN payload_hash ~ '^[0-9a-f]{64}$' THEN decode(payload_hash, 'hex')
             ELSE convert_to(payload_hash, 'UTF8') END
    );

-- 3. No query reads the audit log by its id (tests/ops_plans.py lists what the operators'
--    API asks; the rest appends): its primary key was an index entry and a WAL record per
--    row for nothing. The id stays, as the order of rows written in the same instant.
ALTER TABLE payment_service.audit_log DROP CONSTRAINT audit_log_pkey;
