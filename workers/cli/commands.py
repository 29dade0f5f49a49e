"""The command table: every `paygate` command, imported by name (no discovery)."""

from __future__ import annotations

from workers.cli import (
    dev,
    dlq,
    events,
    migrate,
    partitions,
    payments,
    reconcile,
    serve,
    token,
    worker,
)
from workers.cli.command import Command

COMMANDS: tuple[Command, ...] = (
    dev.COMMAND,
    serve.RUN,
    serve.SERVE,
    worker.COMMAND,
    migrate.COMMAND,
    partitions.COMMAND,
    dlq.COMMAND,
    payments.COMMAND,
    events.COMMAND,
    reconcile.COMMAND,
    token.COMMAND,
)
