-- Every recorded payment inserts an outbox row, so each outbox index is paid on the hot
-- path and in bulk staging. event_id is a random v4 UUID we generate (unique by
-- construction; consumers dedupe on it): a unique index on it is a random-access btree
-- insert per event that guards nothing. The relay's claim walks the primary key in id
-- order; dead letters are rare (they page someone), so a partial index just for "not
-- dead" is not worth its upkeep either.
ALTER TABLE payment_service.outbox DROP CONSTRAINT outbox_event_id_key;
DROP INDEX payment_service.idx_outbox_pending;
