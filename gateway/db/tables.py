"""Names the schema fixes, declared once: the schema, and the tables partitioned by month
(each with a `<table>_default` partition for rows no month covers yet)."""

from __future__ import annotations

SCHEMA = "payment_service"

# Partitioned by RANGE of a timestamp, one partition per month (sql/001_schema.sql).
PARTITIONED_TABLES = ("payments", "webhook_events", "audit_log")


def quote_ident(name: str) -> str:
    """A Postgres identifier, quoted (names come from settings and tests, never requests)."""
    return '"' + name.replace('"', '""') + '"'
