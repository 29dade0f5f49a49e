"""The chain of data-modifying CTEs that records new payments, written once for both
bulk paths (the webhook writer's batch, gateway.db.payments, and the staging batch,
workers.staging_sql).

Given a CTE named `input` with one row per candidate and the columns payment_id, ref,
account, cif, amount, currency, payment_date, payment_at, channel, metadata and hash, the
chain claims the
references with `INSERT ... ON CONFLICT DO NOTHING RETURNING` (in reference order, so
concurrent batches never deadlock), and only for the references it won (`won`) inserts
the payment, its `payment.recorded` event (into the event log: one row per lane with the
winners' ids, payment_dates and statuses as recorded; the relay builds the payload from
the payment, gateway.db.events_sql) and its audit row. `payment_references` is the
authority: a reference can be claimed once, whatever the caches said and however many
instances race.
"""

from __future__ import annotations

from gateway.db.event_log import append_recorded_sql


def record_ctes(
    *, source: str, status: str, event_at: str, topic: str, actor: str, traceparent: str
) -> str:
    """`claimed, won, paid, evt, aud` as SQL (to follow `WITH input AS (...),`). Each
    argument is an SQL expression over the winner row `w` (or a parameter/literal);
    `traceparent` is the trace context the event carries to Kafka (NULL: none)."""
    return f"""claimed AS (
    INSERT INTO payment_service.payment_references
        (reference_number, payment_id, payment_date, payload_hash)
    SELECT ref, payment_id, payment_date, decode(hash, 'hex') FROM input ORDER BY ref
    ON CONFLICT DO NOTHING
    RETURNING payment_id
), won AS MATERIALIZED (
    SELECT i.* FROM input i JOIN claimed c ON c.payment_id = i.payment_id
), paid AS (
    INSERT INTO payment_service.payments
        (id, reference_number, loan_account_number, cif, amount, currency, payment_date,
         payment_at, payment_channel, source, metadata, status, provider_event_at)
    SELECT w.payment_id, w.ref, w.account, w.cif, w.amount, w.currency, w.payment_date,
           w.payment_at, w.channel, {source}, w.metadata, {status}, {event_at}
    FROM won w
), evt AS (
    {append_recorded_sql(won="won", status=status, topic=topic, traceparent=traceparent)}
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
    SELECT {actor}, 'created', w.ref, w.payment_id,
           jsonb_build_object('source', {source}, 'status', {status})
    FROM won w
)"""
