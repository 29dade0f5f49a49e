-- The trace context an event carries to Kafka (issue 30): the W3C `traceparent` of the
-- request (or staging batch) that recorded it, published as the message's `traceparent`
-- header so a consumer can continue the trace. NULL while tracing is off, which is the
-- default: a nullable column without a default is added without rewriting the table, and
-- rows already queued are published as before.
ALTER TABLE payment_service.outbox ADD COLUMN traceparent TEXT;
