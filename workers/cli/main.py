"""`paygate`: the command line.

    paygate dev                  embedded Postgres/Redis/Kafka (for unset URLs) + server + workers
    paygate run                  server + workers against the configured URLs
    paygate serve                the HTTP server alone
    paygate worker NAME...       background workers alone (outbox, staging, partitions,
                                 status_poller)
    paygate migrate              apply pending migrations and create the monthly partitions
    paygate events tail          the events topic as JSON lines (--from-beginning, --follow,
                                 --max N, --key REF)
    paygate partitions | dlq | reconcile | token | payments   (see each module)

Settings come from the environment (see docs/configuration.md); a bad value stops start-up with
a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.errors import ConfigError
from workers.cli.command import CHILD_ENV
from workers.cli.reachability import Unreachable


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


def build_parser() -> argparse.ArgumentParser:
    from workers.cli.commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="paygate", description="Payment-webhook ingestion gateway"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.arguments(sub.add_parser(command.name, help=command.help))
    return parser


# Commands that start child processes whose metrics the servers must expose (`serve`
# only with several server processes). Never the others: a `paygate migrate` must not
# empty the directory of a server running on the same host.
SUPERVISING = ("run", "dev")


def prepare_metrics(settings: Settings, command: str | None) -> None:
    """Several processes (servers sharing one port, the workers process of `paygate run`):
    prometheus-client's multiprocess mode must be on before any metric is created, with a
    directory the parent empties once."""
    from gateway.observability.exposition import prepare_multiprocess_dir

    several = command in SUPERVISING or (command == "serve" and settings.server_processes > 1)
    if not several and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return
    if os.environ.get(CHILD_ENV):
        return  # the parent prepared it
    default = str(Path(settings.data_dir).resolve() / "metrics")
    prepare_multiprocess_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or default)


def main(argv: list[str] | None = None) -> int:
    from gateway.observability import logs

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        if argv is not None and any(a in ("-h", "--help") for a in argv):
            settings = Settings()
        else:
            print(f"paygate: configuration error: {exc}", file=sys.stderr)
            return 2
    given = sys.argv[1:] if argv is None else argv
    prepare_metrics(settings, next((a for a in given if not a.startswith("-")), None))
    from workers.cli.commands import COMMANDS  # after the metrics set-up (see command.py)

    args = build_parser().parse_args(argv)
    logs.configure(settings.log_level)
    from gateway.observability import tracing

    try:
        tracing.configure()  # only when OTEL_* asks for traces
    except ConfigError as exc:
        print(f"paygate: configuration error: {exc}", file=sys.stderr)
        return 2
    run = next(c.run for c in COMMANDS if c.name == args.command)
    try:
        return _run_loop(run(args, settings))
    except ConfigError as exc:
        print(f"paygate: configuration error: {exc}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(f"paygate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
