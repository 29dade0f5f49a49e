-- Lean outbox rows (issue 19). A payment's business fields never change once it is
-- recorded (a conflicting re-send is a 409 and is not applied), so a `payment.recorded`
-- row needs to hold only what is particular to the event: the payment's id and
-- payment_date (the relay's join to `payments` then prunes to one partition) and the
-- status the payment was recorded with (it may change before the event is published).
-- The relay builds the payload from `payments` at publish time, byte for byte what was
-- stored before (gateway/db/events_sql.py; the event's timestamp is the row's
-- created_at, set to the recording statement's time). Rows already queued keep their
-- stored payload and are published from it, as are the events that carry more than the
-- payment (status changes, reconciliation runs): `payload` stays, now nullable.
ALTER TABLE payment_service.outbox
    ALTER COLUMN payload DROP NOT NULL,
    ADD COLUMN payment_id   UUID,
    ADD COLUMN payment_date TIMESTAMP,
    ADD COLUMN status       VARCHAR(20),
    ADD CONSTRAINT outbox_payload_or_payment CHECK (
        payload IS NOT NULL
        OR (payment_id IS NOT NULL AND payment_date IS NOT NULL AND status IS NOT NULL)
    );
