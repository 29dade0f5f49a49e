-- The stats endpoint counts today's deliveries by outcome: let it read the index alone.
CREATE INDEX idx_webhook_events_received ON payment_service.webhook_events (received_at, outcome);
