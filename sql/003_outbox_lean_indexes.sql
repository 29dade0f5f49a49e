-- Every recorded payment inserts an outbox row, so each outbox index is paid on the hot
-- path and in bulk staging. event_id is a random v4 UUID we generate (unique by
-- construction; consumers dedupe on it): a unique index on it is a random-access btree
-- insert per event that guards nothing. (The partial index on pending ids stays: the
-- relay's claim needs it once a backlog builds up.)
ALTER TABLE payment_service.outbox DROP CONSTRAINT outbox_event_id_key;
