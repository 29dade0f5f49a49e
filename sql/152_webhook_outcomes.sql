-- Every webhook answered, by day (UTC), channel and outcome: the refused ones too (a bad
-- signature, an address or rate refused, a body too large, an unknown channel), which
-- webhook_events never stores, and the duplicates answered from memory or Redis. Each
-- process adds its counts every second (gateway.observability.outcomes), so the console's
-- "webhooks today" and its table by outcome are one set of numbers for every instance.
CREATE TABLE payment_service.webhook_outcomes (
    day       DATE         NOT NULL,
    channel   VARCHAR(100) NOT NULL,
    outcome   VARCHAR(32)  NOT NULL,
    answered  BIGINT       NOT NULL,
    PRIMARY KEY (day, channel, outcome)
);
