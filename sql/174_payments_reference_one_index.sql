-- One index on a payment's reference instead of two (issue 31, bytes per payment).
-- idx_payments_reference (the reference as it is) and idx_payments_reference_folded
-- (lower-cased, byte order, sql/151) held the same random key: each an index entry, its
-- WAL record and its share of page splits per payment: ~230 bytes for one of them
-- (bench.write_volume, 3,849 -> 3,629 B a payment without this one). The
-- folded index serves exact lookups too: they are written
-- `lower(reference_number) = lower($1) AND reference_number = $1` (equal references fold
-- equal, so nothing is missed; the second condition drops other cases of the letters).
DROP INDEX payment_service.idx_payments_reference;
