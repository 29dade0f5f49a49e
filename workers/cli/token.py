"""`paygate token --role ops:read [--subject NAME] [--ttl 3600]`: mint an ops API token.

Operators get short-lived HS256 tokens signed with ADMIN_JWT_SECRET; the subject is
what the audit log records for their actions. A lifetime above OPS_TOKEN_MAX_TTL_SECONDS
(a day by default) is refused, as the gateway would refuse the token. The token goes to
stdout; its id (for `POST /api/v1/tokens/revoke`) and expiry to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.security import tokens
from gateway.security.auth import ROLES
from workers.cli.command import Command
from workers.cli.discovery import ADMIN_SECRET_FILE, locate


def _ttl(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", action="append", choices=ROLES, required=True,
                   help="ops:read or ops:write (repeatable)")  # fmt: skip
    p.add_argument("--subject", default=None, help="who the token is for (default: $USER)")
    p.add_argument(
        "--ttl",
        type=_ttl,
        default=3600,
        help="lifetime in seconds (default 3600, at most OPS_TOKEN_MAX_TTL_SECONDS)",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = await locate(settings)
    if not settings.admin_jwt_secret:
        raise ConfigError(
            f"ADMIN_JWT_SECRET is not set, and no `paygate dev` has kept one in "
            f"{settings.data_dir}/{ADMIN_SECRET_FILE} (start one with `make run`)"
        )
    policy = tokens.policy_of(settings)
    if args.ttl > policy.max_ttl:
        raise ConfigError(
            f"--ttl {args.ttl} is longer than OPS_TOKEN_MAX_TTL_SECONDS ({policy.max_ttl})"
        )
    subject = args.subject or getpass.getuser()
    token = tokens.mint(settings.admin_jwt_secret, subject, args.role, ttl=args.ttl, policy=policy)
    claims = tokens.verify(token, settings.admin_jwt_secret, policy)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims.expires))
    print(f"token id (jti) {claims.token_id}, expires {expires}", file=sys.stderr)
    print(token)
    return 0


COMMAND = Command(
    "token",
    "mint an ops API bearer token (ADMIN_JWT_SECRET, else the dev stack's)",
    run,
    _arguments,
)
