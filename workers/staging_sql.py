"""The staging batch as SQL: validation, hashing and event payloads computed by Postgres.

Row by row in Python a staging batch cost ~43 µs of interpreter time per row (decoding,
validating, hashing, building and encoding each event). Here the same rules are SQL
expressions over the claimed rows, so Python does a fixed amount of work per batch.

Nothing in this module is a second rule book: the expressions are generated from the
Python definitions they mirror (`gateway.domain.model` widths, AMOUNT_MAX, IDENTITY_FIELDS and
`business_hash`'s formatting; `gateway.domain.validation`'s whitespace and control-character
sets; `gateway.domain.events.payment_recorded`'s payload shape), and
tests/workers/test_staging_sql_parity.py runs both sides over awkward values and
demands identical answers. Change a rule in Python and that test tells you what to
change here.

Statements (all in the batch's one transaction):

- `CLAIM`: lock the oldest unprocessed rows, return only their ids;
- `record_sql(...)`: classify the claimed rows, lead each reference with its first
  valid row, claim the references ON CONFLICT (in reference order, as
  `gateway.db.payments` does), insert payments, outbox events and audit rows for the
  winners, mark winners and invalid rows; return counts, up to ERROR_DETAILS_MAX
  error items, and the ids of the valid rows that did not win ("the rest");
- `SETTLE`: in a fresh snapshot (so references committed concurrently are visible),
  decide the rest against `payment_references` (duplicate or conflict), audit the
  conflicts, mark them, and write the `staging_process_log` row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.db.events_sql import iso_micro_sql, sql_literal
from gateway.db.recording_sql import record_ctes
from gateway.db.server import NEWEST, ServerFunctions
from gateway.domain.model import (
    ACCOUNT_MAX,
    AMOUNT_MAX,
    CHANNEL_MAX,
    CIF_MAX,
    DEFAULT_STATUS,
    IDENTITY_FIELDS,
    REFERENCE_MAX,
)
from gateway.domain.validation import AMOUNT_LIMIT_DETAIL, BAD_CHARS

SOURCE = "staging"
ERROR_DETAILS_MAX = 100
_SURROGATES = range(0xD800, 0xE000)


# -- character classes, derived from Python's own predicates ---------------------------


def _ranges(points: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in points:
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def _escape(point: int) -> str:
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def char_class(accept: Callable[[str], bool]) -> str:
    """A Postgres regex bracket expression matching the characters `accept` accepts.

    Only characters Postgres text can hold are probed (no NUL, no surrogates).
    """
    points = [
        p for p in range(1, 0x110000) if p not in _SURROGATES and accept(chr(p))
    ]  # fmt: skip
    parts = [_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in _ranges(points)]
    return "[" + "".join(parts) + "]"


@functools.cache
def space_class() -> str:
    """What `str.isspace()` calls whitespace (the "must not be empty" rule)."""
    return char_class(str.isspace)


@functools.cache
def bad_class() -> str:
    """What gateway.domain.validation refuses inside identifiers."""
    return char_class(lambda c: BAD_CHARS.search(c) is not None)


_lit = sql_literal


# -- the rules, in gateway.domain.validation's order -----------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One way a staging row can be refused: `field: detail` when `condition` holds."""

    field: str
    condition: str  # SQL over the row aliases ref, account, cif, amount, ...
    detail: str  # SQL text expression

    def when(self) -> str:
        return f"WHEN {self.condition} THEN {_lit(self.field + ': ')} || {self.detail}"


def _required(field: str, col: str, width: int) -> list[Rule]:
    return [
        Rule(field, f"{col} ~ '^{space_class()}*$'", _lit("must not be empty")),
        *_optional(field, col, width),
    ]


def _optional(field: str, col: str, width: int) -> list[Rule]:
    return [
        Rule(field, f"char_length({col}) > {width}", _lit(f"longer than {width} characters")),
        Rule(field, f"{col} ~ '{bad_class()}'", _lit("contains control or invalid characters")),
    ]


def default_rules(server: ServerFunctions = NEWEST) -> tuple[Rule, ...]:
    """`gateway.domain.validation._build` for a typed staging row, as SQL.

    $2/$3 are the DateWindow bounds, $4 and $5 its "too old" and "too far in the future"
    details (they name the limits: `DateWindow.too_old_detail`, `too_late_detail`).
    """
    amount_max = format(AMOUNT_MAX, "f")
    return (
        # Checked as sent, kept normalised (gateway.domain.references): `ref` below.
        *_required("reference_number", "raw_ref", REFERENCE_MAX),
        *_required("loan_account_number", "account", ACCOUNT_MAX),
        *_required("cif", "cif", CIF_MAX),
        Rule("amount", "amount = 'NaN'::numeric", _lit("must be a finite number")),
        Rule("amount", "amount <= 0", _lit("must be greater than zero")),
        Rule("amount", f"amount > {amount_max}", _lit(AMOUNT_LIMIT_DETAIL)),
        Rule("amount", "amount <> round(amount, 2)", _lit("has more than 2 decimal places")),
        Rule("payment_date", "payment_date < $2::timestamp", "$4::text"),
        Rule("payment_date", "payment_date > $3::timestamp", "$5::text"),
        *_optional("payment_channel", "channel", CHANNEL_MAX),
        # A JSON string is decoded once more, as gateway.domain.validation does with text it
        # is handed for a jsonb column (so '"{}"' is an object and '"x"' is not JSON).
        Rule(
            "metadata",
            "jsonb_typeof(raw_metadata) = 'string' AND NOT "
            + server.is_valid_jsonb("raw_metadata #>> '{}'"),
            _lit("is not valid JSON"),
        ),
        Rule(
            "metadata",
            "jsonb_typeof(meta) NOT IN ('object', 'null')",
            "'must be an object or null, not ' || CASE jsonb_typeof(meta)"
            " WHEN 'array' THEN 'list' WHEN 'string' THEN 'str' WHEN 'boolean' THEN 'bool'"
            " WHEN 'number' THEN CASE WHEN meta::text ~ '^-?[0-9]+$'"
            " THEN 'int' ELSE 'float' END END",
        ),
    )


def problem_sql(rules: Sequence[Rule]) -> str:
    """`'field: detail'` for the first rule a row breaks, NULL for a valid row."""
    return "CASE " + " ".join(r.when() for r in rules) + " END"


# -- values formatted as Python formats them ----------------------------------------------


def business_hash_sql(ref: str, account: str, cif: str, amount: str, payment_date: str) -> str:
    """`gateway.domain.model.business_hash` (default identity) over SQL expressions."""
    values = {
        "amount": f"{amount}::text",  # numeric(15,2) prints exactly as format(q, "f")
        "loan_account_number": account,
        "cif": cif,
        "payment_date": iso_micro_sql(payment_date),
    }
    parts = [ref] + [values[f] for f in IDENTITY_FIELDS]
    joined = " || chr(31) || ".join(parts)
    return f"left(encode(sha256(convert_to({joined}, 'UTF8')), 'hex'), 32)"


# -- the statements ---------------------------------------------------------------------

# Custom plans for the rest of the transaction: a generic plan cannot see how many ids
# the batch holds and may scan the whole staging table for them.
CLAIM = """
SELECT coalesce(array_agg(id ORDER BY id), '{}'::bigint[])
FROM (SELECT set_config('plan_cache_mode', 'force_custom_plan', true)) custom, (
    SELECT id FROM payment_service.payment_staging
    WHERE processed IS NOT TRUE
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) claimed
"""

# A batch the database refused as a whole is retried one reference at a time.
GROUPS = """
SELECT id, payment_service.normalize_reference(reference_number) AS reference_number
FROM payment_service.payment_staging
WHERE id = ANY($1::bigint[]) ORDER BY 2, id
"""

REFUSE = """
UPDATE payment_service.payment_staging
SET processed = TRUE, processed_at = (now() AT TIME ZONE 'UTC'),
    result = 'error', payment_id = NULL, error = $2
WHERE id = ANY($1::bigint[])
"""


def classify_sql(rules: Sequence[Rule], server: ServerFunctions = NEWEST) -> str:
    """The claimed rows with their problem; parameters $1..$5 as in `record_sql`."""
    return f"""
SELECT id, ref, account, cif, amount, NULL::text AS currency, payment_date,
       NULL::timestamptz AS payment_at, channel,
       NULLIF(meta, 'null'::jsonb) AS metadata, {problem_sql(rules)} AS problem
FROM (
    SELECT s.*, CASE WHEN jsonb_typeof(raw_metadata) = 'string'
                      AND {server.is_valid_jsonb("raw_metadata #>> '{}'")}
                     THEN (raw_metadata #>> '{{}}')::jsonb ELSE raw_metadata END AS meta
    FROM (
        SELECT s.id, s.reference_number AS raw_ref,
               payment_service.normalize_reference(s.reference_number) AS ref,
               s.loan_account_number AS account, s.cif,
               s.amount, s.payment_date, s.payment_channel AS channel,
               s.metadata AS raw_metadata
        -- By primary key. Joined to unnest($1) instead, the rows were found by hashing the
        -- batch against a sequential scan of the whole staging table, every batch (70 ms
        -- a batch at a 200,000-row backlog: most of the shipped batch size's cost).
        FROM payment_service.payment_staging s
        WHERE s.id = ANY($1::bigint[])
    ) s
) s
"""


def _batch_ids_sql(new_id: str, n: str) -> str:
    """Distinct payment ids for the rows of one batch from a single `new_id` call: its first
    64 bits (with v7, the millisecond and version: what keeps the primary key's inserts
    at the right edge) and 62 bits of sha256(base, n). Drawing one random id per row cost
    ~3 µs each on Postgres builds that read /dev/urandom per call."""
    base = f"(SELECT {new_id})::text"  # an InitPlan: evaluated once per statement
    low = f"right(encode(sha256(convert_to({base} || ':' || {n}, 'UTF8')), 'hex'), 16)"
    return f"(left(replace({base}, '-', ''), 16) || overlay({low} placing '8' from 1))::uuid"


def record_sql(rules: Sequence[Rule], *, server: ServerFunctions = NEWEST) -> str:
    """Record a claimed batch. Parameters: $1 ids, $2 earliest and $3 latest payment
    date, $4 the too-old and $5 the too-late detail, $6 the outbox topic, $7 the batch's
    trace context (or NULL) for its events. One row back: recorded, errors, error_items
    (JSON text, first ERROR_DETAILS_MAX by id), rest_ids, rest_fresh."""
    hashed = business_hash_sql("l.ref", "l.account", "l.cif", "l.amount", "l.payment_date")
    chain = record_ctes(
        source=_lit(SOURCE), status=_lit(DEFAULT_STATUS), event_at="NULL", topic="$6",
        actor=_lit(SOURCE), traceparent="$7::text",
    )  # fmt: skip
    return f"""
WITH batch AS MATERIALIZED ({classify_sql(rules, server)}
), input AS MATERIALIZED (
    SELECT {_batch_ids_sql(server.new_uuid, "row_number() OVER ()")} AS payment_id, l.*,
           {hashed} AS hash
    FROM (SELECT DISTINCT ON (ref) * FROM batch WHERE problem IS NULL ORDER BY ref, id) l
), {chain}, marked AS (
    UPDATE payment_service.payment_staging s
    SET processed = TRUE, processed_at = (now() AT TIME ZONE 'UTC'),
        result = CASE WHEN b.problem IS NULL THEN 'recorded' ELSE 'error' END,
        payment_id = w.payment_id, error = b.problem
    FROM batch b LEFT JOIN won w ON w.id = b.id
    -- `s.id = ANY($1)` is redundant with the join, but it shows the planner exactly which
    -- rows to fetch by primary key: without it, it chose a sequential scan of the whole
    -- staging table per batch (measured: 43 ms of a 200 ms batch at 400k rows, growing
    -- with the table, so quadratic over a backlog).
    WHERE s.id = ANY($1::bigint[]) AND s.id = b.id
      AND (b.problem IS NOT NULL OR w.id IS NOT NULL)
), rest AS (
    SELECT b.id, EXISTS (SELECT 1 FROM won w WHERE w.ref = b.ref) AS fresh
    FROM batch b
    WHERE b.problem IS NULL AND NOT EXISTS (SELECT 1 FROM won w WHERE w.id = b.id)
)
SELECT
    (SELECT count(*) FROM won) AS recorded,
    (SELECT count(*) FROM batch WHERE problem IS NOT NULL) AS errors,
    (SELECT jsonb_agg(jsonb_build_object(
                'id', id, 'reference_number', ref, 'field', split_part(problem, ': ', 1),
                'detail', substr(problem, strpos(problem, ': ') + 2)) ORDER BY id)::text
       FROM (SELECT id, ref, problem FROM batch WHERE problem IS NOT NULL
             ORDER BY id LIMIT {ERROR_DETAILS_MAX}) e) AS error_items,
    (SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM rest) AS rest_ids,
    (SELECT coalesce(array_agg(fresh ORDER BY id), '{{}}') FROM rest) AS rest_fresh
"""


_REST_HASH = business_hash_sql(
    "payment_service.normalize_reference(s.reference_number)",
    "s.loan_account_number", "s.cif", "s.amount", "s.payment_date",
)  # fmt: skip

SETTLE = f"""
WITH rest AS (
    SELECT s.id, payment_service.normalize_reference(s.reference_number) AS ref, u.fresh,
           {_REST_HASH} AS hash
    FROM unnest($1::bigint[], $2::bool[]) AS u(id, fresh)
    JOIN payment_service.payment_staging s ON s.id = u.id
), fate AS MATERIALIZED (
    SELECT r.id, r.ref, t.payment_id,
        CASE WHEN t.payment_id IS NULL THEN 'error'
             WHEN t.payload_hash = decode(r.hash, 'hex') THEN 'duplicate' ELSE 'conflict' END
            AS result,
        CASE WHEN t.payment_id IS NULL THEN 'reference_number: vanished while recording'
             WHEN t.payload_hash = decode(r.hash, 'hex') THEN NULL
             WHEN r.fresh THEN 'reference_number: differs from an earlier row of this batch'
             ELSE 'reference_number: differs from the recorded payment' END AS problem
    FROM rest r
    LEFT JOIN payment_service.payment_references t ON t.reference_number = r.ref
), marked AS (
    UPDATE payment_service.payment_staging s
    SET processed = TRUE, processed_at = (now() AT TIME ZONE 'UTC'),
        result = f.result, payment_id = f.payment_id, error = f.problem
    FROM fate f WHERE s.id = ANY($1::bigint[]) AND s.id = f.id
), aud AS (
    INSERT INTO payment_service.audit_log
        (actor, action, reference_number, payment_id, details)
    SELECT {_lit(SOURCE)}, 'conflict', ref, payment_id,
           jsonb_build_object('source', {_lit(SOURCE)}, 'staging_id', id,
                              'detail', substr(problem, strpos(problem, ': ') + 2))
    FROM fate WHERE result = 'conflict'
), tally AS (
    SELECT count(*) FILTER (WHERE result = 'duplicate') AS duplicate,
           count(*) FILTER (WHERE result = 'conflict') AS conflict,
           count(*) FILTER (WHERE result = 'error') AS error
    FROM fate
), problems AS (
    SELECT (x ->> 'id')::bigint AS id, x
    FROM jsonb_array_elements(coalesce($8::text, '[]')::jsonb) AS x
    UNION ALL
    SELECT id, jsonb_build_object(
        'id', id, 'reference_number', ref, 'field', split_part(problem, ': ', 1),
        'detail', substr(problem, strpos(problem, ': ') + 2))
    FROM fate WHERE problem IS NOT NULL
), summary AS (
    SELECT t.*, $7::bigint + t.conflict + t.error AS bad FROM tally t
), logged AS (
    INSERT INTO payment_service.staging_process_log
        (batch_start_id, batch_end_id, total_records, processed_records, duplicate_records,
         error_records, status, attempt, duration_ms, completed_at, error_details)
    SELECT $3, $4, $5, $6, m.duplicate, m.bad, 'completed', $9, $10, clock_timestamp(),
        CASE WHEN m.bad = 0 THEN NULL ELSE jsonb_build_object(
            'total', m.bad, 'conflicts', m.conflict,
            'truncated', m.bad > {ERROR_DETAILS_MAX},
            'items', (SELECT jsonb_agg(p.x ORDER BY p.id) FROM (
                SELECT id, x FROM problems ORDER BY id LIMIT {ERROR_DETAILS_MAX}) p))
        END
    FROM summary m
)
SELECT duplicate, conflict, error FROM tally
"""
