"""`paygate token --role ops:read [--subject NAME] [--ttl 3600]`: mint an ops API token.

Operators get short-lived HS256 tokens signed with ADMIN_JWT_SECRET; the subject is
what the audit log records for their actions. The token goes to stdout only.
"""

from __future__ import annotations

import argparse
import getpass

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.security.auth import ROLES, mint_token
from workers.cli.command import Command
from workers.cli.discovery import ADMIN_SECRET_FILE, locate

MAX_TTL_SECONDS = 30 * 24 * 3600


def _ttl(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TTL_SECONDS}")
    return value


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", action="append", choices=ROLES, required=True,
                   help="ops:read or ops:write (repeatable)")  # fmt: skip
    p.add_argument("--subject", default=None, help="who the token is for (default: $USER)")
    p.add_argument("--ttl", type=_ttl, default=3600, help="lifetime in seconds (default 3600)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = await locate(settings)
    if not settings.admin_jwt_secret:
        raise ConfigError(
            f"ADMIN_JWT_SECRET is not set, and no `paygate dev` has kept one in "
            f"{settings.data_dir}/{ADMIN_SECRET_FILE} (start one with `make run`)"
        )
    subject = args.subject or getpass.getuser()
    print(mint_token(settings.admin_jwt_secret, subject, args.role, ttl=args.ttl))
    return 0


COMMAND = Command(
    "token",
    "mint an ops API bearer token (ADMIN_JWT_SECRET, else the dev stack's)",
    run,
    _arguments,
)
