"""What every `paygate` command is, and the little they share.

A command module defines a `Command`: its name, help, arguments and the coroutine that
runs it. Modules keep their heavy imports inside `run`, so that `paygate --help` and
the multiprocess-metrics set-up (which must happen before prometheus_client is first
imported) stay ahead of them.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.config import Settings

# Set in the extra server processes WEB_CONCURRENCY starts (they run no workers and do
# not prepare the metrics directory: the parent did).
CHILD_ENV = "PAYGATE_SERVER_CHILD"

Run = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Run
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


def cli_actor(given: str = "") -> str:
    """Who the audit log names for an action taken from the command line."""
    if given:
        return given
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
