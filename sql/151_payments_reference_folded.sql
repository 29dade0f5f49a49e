-- Reference search as an operator types it: a prefix, in any case (`inv-10` finds
-- INV-1001). The lower-cased reference in byte order (text_pattern_ops), so a prefix is a
-- range on this index (gateway.db.payment_search). Existing rows are indexed as it is built.
CREATE INDEX idx_payments_reference_folded
    ON payment_service.payments (lower(reference_number) text_pattern_ops);
