"""`payment.recorded` payloads built by Postgres.

The webhook writer and the staging batch append lean events (sql/060, sql/170: ids,
payment date, status) inside the statement that records the payments; the relay builds
each event's payload from the payment row when it reads the event
(gateway.db.event_log; `outbox_payload_sql` for an event waiting in the outbox).
Building it in Postgres costs a few microseconds of C instead of the ~10 µs of Python
(dict, uuid, orjson, bytea encoding) it costs per row in the interpreter, and the bytes
are exactly those the row used to store: tests/workers/test_outbox_lean.py holds them to
a copy taken before. The shape is `tests.oracles.payment_recorded`'s, and
tests/workers/test_staging_sql_parity.py and tests/gateway/db/test_events_sql.py compare
the two over awkward values.
"""

from __future__ import annotations

from gateway.domain.events import PAYMENT_RECORDED


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def iso_micro_sql(ts: str) -> str:
    """`datetime.isoformat(timespec="microseconds")` of a naive timestamp."""
    return f"""to_char({ts}, 'YYYY-MM-DD"T"HH24:MI:SS.US')"""


def iso_z_sql(ts: str) -> str:
    """`gateway.domain.events.iso_utc`: ISO 8601 in UTC with Z, microseconds only when non-zero."""
    return (
        f"""to_char({ts}, 'YYYY-MM-DD"T"HH24:MI:SS') || CASE WHEN date_trunc('second', {ts})"""
        f""" = {ts} THEN '' ELSE to_char({ts}, '.US') END || 'Z'"""
    )


def recorded_event_id_sql(payment_id: str) -> str:
    """The id of a payment's `payment.recorded` event: a UUIDv8 derived from the payment
    id (sha256). A payment has exactly one such event, so the id is unique without
    drawing random bytes: Postgres builds without OpenSSL read /dev/urandom for every
    gen_random_uuid(), measured at ~3 µs a call against ~1 µs for this."""
    digest = f"encode(substr(sha256(uuid_send({payment_id})), 1, 16), 'hex')"
    return f"overlay(overlay({digest} placing '8' from 13) placing '8' from 17)::uuid"


NOW_ISO_SQL = iso_z_sql("(statement_timestamp() AT TIME ZONE 'UTC')")


def money_sql(amount: str) -> str:
    """An amount as text, exactly: 2 decimals, or 3 when a three-decimal currency uses
    its third (round() to at least the value's own scale pads, never rounds)."""
    return f"round({amount}, greatest(scale({amount}), 2))::text"


def event_payload_sql(row: str, *, source: str, status: str, now_iso: str = NOW_ISO_SQL) -> str:
    """The payload (bytea) of the event for a row with columns event_id, payment_id, ref,
    account, cif, amount, currency, payment_date, payment_at, channel, metadata; `source`
    and `status` are SQL expressions.

    `payment_date` on the topic stays the instant in UTC (the contract since seed 004):
    the stored payment_date is the provider's wall clock, so the instant comes from
    payment_at when the provider sent a zone. `currency` follows `amount` only where the
    payment has one (sql/110), so events of payments without it keep their exact bytes."""
    fields = [
        ("id", f"{row}.payment_id"),
        ("reference_number", f"{row}.ref"),
        ("loan_account_number", f"{row}.account"),
        ("cif", f"{row}.cif"),
        ("amount", money_sql(f"{row}.amount")),
        ("payment_date", iso_z_sql(
            f"coalesce({row}.payment_at AT TIME ZONE 'UTC', {row}.payment_date)"
        )),
        ("payment_channel", f"{row}.channel"),
        ("source", source),
        ("status", status),
        ("metadata", f"coalesce({row}.metadata, '{{}}'::jsonb)"),
    ]  # fmt: skip
    with_currency = [*fields[:5], ("currency", f"{row}.currency"), *fields[5:]]

    def build(pairs: list[tuple[str, str]]) -> str:
        return "json_build_object(" + ", ".join(f"'{k}', {v}" for k, v in pairs) + ")"

    return f"""convert_to(json_build_object(
        'event_id', {row}.event_id,
        'event_type', {sql_literal(PAYMENT_RECORDED)},
        'timestamp', {now_iso},
        'payment', CASE WHEN {row}.currency IS NULL THEN {build(fields)}
                        ELSE {build(with_currency)} END
    )::text, 'UTF8')"""


# The columns `event_payload_sql` reads, for a lean outbox row `o` and its payment `p`.
_LEAN_ROW = """
    SELECT o.event_id, p.id AS payment_id, p.reference_number AS ref,
           p.loan_account_number AS account, p.cif, p.amount, p.currency, p.payment_date,
           p.payment_at, p.payment_channel AS channel, p.metadata, p.source, o.status,
           o.created_at
    FROM payment_service.payments p
    WHERE p.id = o.payment_id AND p.payment_date = o.payment_date
"""


def outbox_payload_sql() -> str:
    """The payload of the outbox row aliased `o`, as an expression: the stored payload, or
    for a lean `payment.recorded` row the payload built from its payment (a scalar
    subquery, so also usable in a DELETE's RETURNING; NULL if that payment is gone). The
    event's timestamp is the row's created_at, which the recording statement sets to its
    own time, as the stored payload had it."""
    built = event_payload_sql(
        "lean",
        source="lean.source",
        status="lean.status",
        now_iso=iso_z_sql("(lean.created_at AT TIME ZONE 'UTC')"),
    )
    return f"coalesce(o.payload, (SELECT {built} FROM ({_LEAN_ROW}) lean))"
