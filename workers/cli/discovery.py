"""How every `paygate` command finds its servers with nothing configured: the dev stack.

`paygate dev` keeps, in its data dir (PAYGATE_DATA_DIR, `.paygate` by default):
- `dev-webhook-secret` and `dev-admin-jwt-secret`, made once and kept, so the generic
  channel verifies signatures and the ops API and console open on the first `make run`;
- `dev-stack.json` while it runs: its pid, its address and the URLs of the embedded
  servers it started (never a configured URL: those may carry a password).

`locate` is the one function the commands call. A variable the user set always wins;
for one left unset it takes the running stack's URL, else the embedded servers' ports
(a stack started from another directory with the default ports), and then checks that
something answers there, so a command with no stack to find says so in one line.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from gateway.config import Settings
from workers.cli.reachability import Unreachable, require_reachable

WEBHOOK_SECRET_FILE = "dev-webhook-secret"
ADMIN_SECRET_FILE = "dev-admin-jwt-secret"
STACK_FILE = "dev-stack.json"
DEFAULT_DATA_DIR = ".paygate"
EMBEDDED_DATABASE = "paygate"


def kept_secret(data_dir: Path, name: str, make: Callable[[], str]) -> str:
    """The secret in `data_dir/name`, made once (mode 0600) and kept across runs."""
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
    return path.read_text().strip()


def dev_webhook_secret(data_dir: Path) -> str:
    return kept_secret(
        data_dir,
        WEBHOOK_SECRET_FILE,
        lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    )


def dev_admin_secret(data_dir: Path) -> str:
    """32 random bytes: the ops API refuses a shorter ADMIN_JWT_SECRET."""
    return kept_secret(data_dir, ADMIN_SECRET_FILE, lambda: secrets.token_urlsafe(32))


@dataclass(frozen=True)
class DevStack:
    """What a running `paygate dev` records for the other commands."""

    pid: int
    url: str  # http(s)://host:port of the server
    database_url: str = ""
    redis_url: str = ""
    kafka_bootstrap_servers: str = ""


def data_dir_of(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve()


def record(data_dir: Path, stack: DevStack) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch = data_dir / f".{STACK_FILE}.{stack.pid}"
    scratch.write_bytes(orjson.dumps(asdict(stack), option=orjson.OPT_INDENT_2))
    scratch.replace(data_dir / STACK_FILE)


def forget(data_dir: Path, pid: int) -> None:
    """Remove the record if it is this process's (a newer stack may have replaced it)."""
    stack = _read(data_dir)
    if stack is not None and stack.pid == pid:
        (data_dir / STACK_FILE).unlink(missing_ok=True)


def _read(data_dir: Path) -> DevStack | None:
    try:
        raw = orjson.loads((data_dir / STACK_FILE).read_bytes())
        return DevStack(**raw)
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


def _is_dev_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc here: the pid is alive, trust the record
    return b"dev" in argv  # not a reused pid of some other program


def running(data_dir: Path) -> DevStack | None:
    """The stack `paygate dev` recorded in `data_dir`, if that process still runs."""
    stack = _read(data_dir)
    if stack is None or not _is_dev_process(stack.pid):
        return None
    return stack


def with_dev_stack(settings: Settings) -> tuple[Settings, frozenset[str]]:
    """`settings` with every unset URL and the ops token secret taken from the dev stack,
    and the names of the variables so filled."""
    data = data_dir_of(settings)
    stack = running(data)
    guesses = {
        "DATABASE_URL": (
            "database_url",
            (stack.database_url if stack else "")
            or f"postgresql://postgres@127.0.0.1:{settings.embedded_pg_port}/{EMBEDDED_DATABASE}",
        ),
        "REDIS_URL": (
            "redis_url",
            (stack.redis_url if stack else "")
            or f"redis://127.0.0.1:{settings.embedded_redis_port}/0",
        ),
        "KAFKA_BOOTSTRAP_SERVERS": (
            "kafka_bootstrap_servers",
            (stack.kafka_bootstrap_servers if stack else "")
            or f"127.0.0.1:{settings.embedded_kafka_port}",
        ),
    }
    changes: dict[str, str] = {}
    filled = set()
    for variable, (field, value) in guesses.items():
        if not getattr(settings, field):
            changes[field] = value
            filled.add(variable)
    secret = data / ADMIN_SECRET_FILE
    if not settings.admin_jwt_secret and secret.is_file():
        changes["admin_jwt_secret"] = secret.read_text().strip()
        filled.add("ADMIN_JWT_SECRET")
    return settings.replace(**changes), frozenset(filled)


_FIELDS = {
    "DATABASE_URL": "database_url",
    "REDIS_URL": "redis_url",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka_bootstrap_servers",
}


async def locate(settings: Settings, *variables: str) -> Settings:
    """Settings for a command that talks to the servers named by `variables` (DATABASE_URL,
    REDIS_URL, KAFKA_BOOTSTRAP_SERVERS): configured, else the dev stack's; raises
    Unreachable (one line) when nothing answers at one of them."""
    found, filled = with_dev_stack(settings)
    for variable in variables:
        value = getattr(found, _FIELDS[variable])
        try:
            await require_reachable([(variable, value)])
        except Unreachable as exc:
            if variable not in filled:
                raise
            where = str(exc).removeprefix(f"cannot reach {variable} at ")
            raise Unreachable(
                f"{variable} is not set, and no `paygate dev` answers at {where}: "
                f"start one (make run) or set {variable}"
            ) from None
    return found


def _shown_path(path: Path) -> str:
    """Relative to the working directory when inside it (what a user would type)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def paygate_command() -> str:
    """How to run `paygate` from this shell: the name when PATH finds this installation,
    else the script beside this interpreter, else `python -m workers.cli`."""
    here = Path(sys.executable).parent / "paygate"
    on_path = shutil.which("paygate")
    if on_path and here.exists() and Path(on_path).resolve() == here.resolve():
        return "paygate"
    if here.exists():
        return shlex.quote(_shown_path(here.absolute()))
    return f"{shlex.quote(sys.executable)} -m workers.cli"


def token_command(settings: Settings, *, secret_kept: bool) -> str:
    """The exact command that mints a token the console and the ops API accept: with the
    secret kept in the data dir, it needs only that dir (named when it is not the
    default); with ADMIN_JWT_SECRET given, it needs the same variable."""
    command = f"{paygate_command()} token --role ops:write"
    if not secret_kept:
        return f"{command}   (with the same ADMIN_JWT_SECRET)"
    if os.environ.get("PAYGATE_DATA_DIR"):
        return f"PAYGATE_DATA_DIR={shlex.quote(_shown_path(data_dir_of(settings)))} {command}"
    return command


def base_url(settings: Settings) -> str:
    """Where a browser on this host reaches the server."""
    scheme = "https" if settings.tls_cert_file else "http"
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
    return f"{scheme}://{host}:{settings.port}"


def banner(settings: Settings, *, webhook_secret_file: Path | None, admin_secret_kept: bool) -> str:
    """What `paygate dev` prints once it answers: where each door is."""
    base = base_url(settings)
    secret = (
        _shown_path(webhook_secret_file) if webhook_secret_file is not None else "WEBHOOK_SECRET"
    )
    return "\n".join(
        [
            "paygate is up",
            f"  webhooks  POST {base}/api/v1/payments/webhook   (secret: {secret})",
            f"  console   {base}/console",
            f"  token     {token_command(settings, secret_kept=admin_secret_kept)}",
        ]
    )
