-- A parked status update keeps the id of the delivery that brought it, so a provider's
-- retry of that delivery (a GoCardless or Adyen batch sent again) parks nothing twice.
ALTER TABLE payment_service.pending_status_updates ADD COLUMN delivery_id VARCHAR(255);
CREATE UNIQUE INDEX uq_pending_status_delivery
    ON payment_service.pending_status_updates (channel, delivery_id)
    WHERE delivery_id IS NOT NULL;
