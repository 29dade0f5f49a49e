-- Money as each provider means it, and the provider's own calendar day (issues 32, 27).
--
-- Every statement here is a catalog change on payments: no partition is rewritten and
-- no row is read, except the two indexes on the widened identifier columns (below).
-- Existing rows keep their values: amounts stay as recorded (2 decimals), currency and
-- payment_at are NULL (nothing recorded before said them), and payment_date stays what
-- was stored then: the UTC date when a provider sent an offset. docs/payments.md
-- ("Dates", "Currencies") says how to read such rows and how to find amounts recorded
-- with a wrong exponent (`paygate payments suspect-exponents`).

-- Three-decimal currencies (BHD, KWD, JOD, OMR, TND, IQD, LYD). Dropping the typmod is
-- a relabel on PostgreSQL 15-18 (numeric's support function: no rewrite), but a CHECK
-- that stayed on the column would be re-validated by a scan of every partition under
-- an ACCESS EXCLUSIVE lock (measured: 340 ms per 2 million rows). So the constraint is
-- dropped and added back NOT VALID with the new bounds: rows already there satisfy them
-- by their old type, new rows are checked, and `ALTER TABLE payment_service.payments
-- VALIDATE CONSTRAINT payments_amount_check` may be run later without blocking writes.
ALTER TABLE payment_service.payments
    DROP CONSTRAINT payments_amount_check,
    ALTER COLUMN amount TYPE NUMERIC,
    ADD CONSTRAINT payments_amount_check
        CHECK (amount > 0 AND scale(amount) <= 3 AND amount < 10000000000000) NOT VALID;

-- Reconciliation copies payment amounts: a third decimal must not be rounded there.
ALTER TABLE payment_service.reconciliation_items
    ALTER COLUMN statement_amount TYPE NUMERIC,
    ALTER COLUMN internal_amount TYPE NUMERIC,
    ALTER COLUMN difference TYPE NUMERIC;

-- The currency the payment was recorded in, where its channel names one (ISO 4217
-- alphabetic); the instant the provider stated, where it sent a zone with the date.
ALTER TABLE payment_service.payments
    ADD COLUMN currency VARCHAR(3),
    ADD COLUMN payment_at TIMESTAMPTZ,
    ADD CONSTRAINT payments_currency_check CHECK (currency ~ '^[A-Z]{3}$') NOT VALID;

-- Identifiers at the lengths providers document (Square's customer_id: up to 191
-- characters, Stripe metadata values: 500). Widening a varchar does not touch the heap,
-- but PostgreSQL rebuilds the indexes on the column of a partitioned table (a
-- partitioned index has no storage to reuse): idx_payments_cif and
-- idx_payments_loan_account, on every partition, under an ACCESS EXCLUSIVE lock
-- (bench/migration_110.py: 5.6 s per million payments on PostgreSQL 18, 7.0 s on 15).
-- docs/deploying.md gives the online procedure for a large table; run first, it leaves
-- nothing for this step to do.
DO $$
DECLARE
    col TEXT;
BEGIN
    FOREACH col IN ARRAY ARRAY['cif', 'loan_account_number'] LOOP
        IF (SELECT character_maximum_length FROM information_schema.columns
            WHERE table_schema = 'payment_service' AND table_name = 'payments'
              AND column_name = col) < 500 THEN
            EXECUTE format('ALTER TABLE payment_service.payments ALTER COLUMN %I TYPE VARCHAR(500)', col);
        END IF;
    END LOOP;
END
$$;
