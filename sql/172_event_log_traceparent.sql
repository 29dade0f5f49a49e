-- The trace context of a recorded event in the event log (issue 30 with issue 31): the
-- W3C `traceparent` of each request (or staging batch) whose payments a log row carries,
-- aligned with payment_ids; a stored event's is its first element. Published as the
-- Kafka header `traceparent`, and carried to the outbox (sql/160) when an event is
-- retried. NULL while tracing is off (the default), so a log row stores nothing for it.
ALTER TABLE payment_service.event_log ADD COLUMN traceparents TEXT[];
