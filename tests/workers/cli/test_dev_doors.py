"""A fresh `paygate dev`, as a newcomer meets it: nothing configured, started in a folder
of its own (its data dir is the default `.paygate` there), the production shape (two
server processes and the workers process). Every door must open with no variable set:
the banner says where each is, its token command signs into the console and the ops
API, every command finds the stack by itself, and the first scrape of /metrics already
has every family docs/observability.md lists.

The commands run as a user types them, in that folder, with an environment that names
no server, secret, port or data dir."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import psutil
import pytest

from gateway.ingest.signatures import decode_secret, sign
from tests.conftest import wait_for
from tests.webhooks import payment_doc
from workers.cli.devstack import free_port
from workers.registry import WORKERS

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 120
# Everything that could point a command at a server or a secret: none may be set.
_CONFIGURATION = re.compile(
    r"^(DATABASE_URL|REDIS_URL|KAFKA_.*|DB_.*|REDIS_.*|WEBHOOK_SECRET|ADMIN_JWT_SECRET|PORT"
    r"|EMBEDDED_.*|PAYGATE_.*|PROMETHEUS_MULTIPROC_DIR|WEB_CONCURRENCY)$"
)


def bare_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not _CONFIGURATION.match(k)}


@dataclass
class DevStack:
    root: Path  # the folder it was started in; its data dir is root/.paygate
    port: int
    proc: asyncio.subprocess.Process
    first_scrape: str = ""
    banner: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _healthy(url: str, proc: asyncio.subprocess.Process) -> bool:
    assert proc.returncode is None, "paygate dev exited early"
    try:
        async with aiohttp.ClientSession() as s, s.get(url + "/health") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    psutil.wait_procs(children, timeout=15)


@pytest.fixture(scope="module")
async def dev() -> AsyncIterator[DevStack]:
    root = Path(tempfile.mkdtemp(prefix="paygate-first-hour-"))
    root.chmod(0o755)
    port = free_port()
    env = bare_env()
    # Only the ports differ from a newcomer's run: the defaults may be taken on this host.
    env.update(PORT=str(port), EMBEDDED_PG_PORT=str(free_port()),
               EMBEDDED_REDIS_PORT=str(free_port()), EMBEDDED_KAFKA_PORT=str(free_port()),
               WEB_CONCURRENCY="2", LOG_LEVEL="WARNING")  # fmt: skip
    with open(root / "dev.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.cli", "dev",
            cwd=root, env=env, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    stack = DevStack(root, port, proc)
    try:
        await wait_for(lambda: _healthy(stack.url, proc), timeout=START_TIMEOUT_S, interval=0.1)
        async with aiohttp.ClientSession() as s, s.get(stack.url + "/metrics") as r:
            assert r.status == 200
            stack.first_scrape = await r.text()
        yield stack
    finally:
        await _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


async def banner(dev: DevStack) -> list[str]:
    """The banner's lines, read from `paygate dev`'s output (waited for, with a deadline)."""
    deadline = time.monotonic() + 15
    while not any(line.lstrip().startswith("token") for line in dev.banner):
        assert dev.proc.stdout is not None
        left = deadline - time.monotonic()
        try:
            line = await asyncio.wait_for(dev.proc.stdout.readline(), max(left, 0.01))
        except TimeoutError:
            raise AssertionError(f"no banner from paygate dev; saw {dev.banner!r}") from None
        if not line:
            raise AssertionError(f"paygate dev closed its output; saw {dev.banner!r}")
        dev.banner.append(line.decode().rstrip("\n"))
    return dev.banner


async def paygate(
    dev: DevStack, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`paygate ARGS` run in the stack's folder with no configuration: (rc, out, err)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", *args,
        cwd=dev.root, env=env or bare_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"paygate {' '.join(args)} did not finish") from None
    return proc.returncode or 0, out.decode(), err.decode()


async def run_banner_command(dev: DevStack, command: str) -> str:
    """Run a command line as printed (VAR=value prefixes, then the program) in the stack's
    folder with no configuration; its standard output."""
    words = shlex.split(command)
    env = bare_env()
    while words and re.match(r"^[A-Z_]+=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    proc = await asyncio.create_subprocess_exec(
        *words, cwd=dev.root, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (command, err.decode())
    return out.decode().strip()


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "observability.md").read_text()
    return set(re.findall(r"`(paygate_[a-z_]+)", text))


def exported_families(exposition: str) -> set[str]:
    return set(re.findall(r"^# TYPE (paygate_[a-z_]+) ", exposition, re.MULTILINE))


async def test_first_scrape_has_every_documented_family(dev: DevStack) -> None:
    documented = documented_metrics()
    assert len(documented) > 20, "docs/observability.md lists the metrics"
    exported = exported_families(dev.first_scrape)
    assert sorted(documented - exported) == [], "documented, missing from the first scrape"
    assert sorted(exported - documented) == [], "exported, not in docs/observability.md"


async def test_banner_token_signs_into_the_console_and_the_api(dev: DevStack) -> None:
    lines = await banner(dev)
    doors = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:] if line.strip()}
    assert doors["webhooks"].startswith(f"POST {dev.url}/api/v1/payments/webhook")
    assert doors["console"] == f"{dev.url}/console"
    token = await run_banner_command(dev, doors["token"])

    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.get(doors["console"] + "/login") as r:
            assert r.status == 200
            form = await r.text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None, form
        data = {"csrf_token": csrf.group(1), "token": token}
        async with s.post(doors["console"] + "/login", data=data, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            assert r.headers["Location"] == "/console"
        async with s.get(doors["console"], allow_redirects=False) as r:
            assert r.status == 200  # signed in: the overview, not the sign-in page
        headers = {"Authorization": f"Bearer {token}"}
        async with s.get(f"{dev.url}/api/v1/dlq", headers=headers) as r:
            assert r.status == 200, await r.text()


async def _post_webhook(dev: DevStack, doc: dict[str, object]) -> int:
    secret = (dev.root / ".paygate" / "dev-webhook-secret").read_text().strip()
    body = orjson.dumps(doc)
    headers = sign("standard", decode_secret("standard", secret), body, now=int(time.time()),
                   delivery_id=f"msg_{doc['reference_number']}")  # fmt: skip
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{dev.url}/api/v1/payments/webhook", data=body, headers=headers) as r,
    ):
        return r.status


async def test_every_command_finds_the_dev_stack(dev: DevStack) -> None:
    rc, out, err = await paygate(dev, "partitions", "status")
    assert rc == 0, err
    assert out.splitlines()[0].split() == ["TABLE", "PARTITION", "FROM", "TO", "ROWS", "ACTION"]
    rc, out, err = await paygate(dev, "dlq", "list")
    assert (rc, out.strip()) == (0, "no dead letters"), err
    rc, _, err = await paygate(dev, "migrate")
    assert rc == 0, err
    rc, out, err = await paygate(dev, "token", "--role", "ops:read")
    assert rc == 0 and out.count(".") == 2, err  # a JWT

    doc = payment_doc()
    assert await _post_webhook(dev, doc) == 201
    ref = str(doc["reference_number"])

    async def published() -> bool:
        rc, out, _ = await paygate(dev, "events", "tail", "--from-beginning", "--key", ref)
        return rc == 0 and bool(out.strip())

    await wait_for(published, timeout=30, interval=0.5)

    statement = dev.root / "statement.csv"
    statement.write_text(f"reference_number,amount,payment_date\n{ref},{doc['amount']},"
                         f"{doc['payment_date']}\n")  # fmt: skip
    rc, out, err = await paygate(dev, "reconcile", str(statement))
    assert rc == 0, err
    assert re.search(r"^  matched\s+1$", out, re.MULTILINE), out


async def test_partitions_start_at_the_install_except_payments(dev: DevStack) -> None:
    """A fresh database: no audit_log (or webhook_events) month before the install, but
    payments keeps its months back to PARTITION_RETENTION_MONTHS (12): a payment dated
    that far back is accepted on the first day."""
    rc, out, err = await paygate(dev, "partitions", "status")
    assert rc == 0, err
    now = datetime.now(UTC)
    this_month = f"{now.year:04d}-{now.month:02d}-01"
    months: dict[str, list[str]] = {}
    partitions = out.split("\n\n")[0]  # the retention table follows a blank line
    for line in partitions.splitlines()[1:]:
        table, name, *rest = line.split()
        if not name.endswith("_default"):
            months.setdefault(table, []).append(rest[0])
    assert min(months["audit_log"]) == this_month, months["audit_log"]
    assert min(months["webhook_events"]) == this_month, months["webhook_events"]
    assert len(months["audit_log"]) == 1 + 3  # this month and PARTITION_PREMAKE_MONTHS
    year_ago = f"{now.year - 1:04d}-{now.month:02d}-01"
    assert min(months["payments"]) == year_ago, months["payments"]


async def test_partitions_maintain_says_what_it_did(dev: DevStack) -> None:
    rc, out, err = await paygate(dev, "partitions", "maintain")
    assert rc == 0, err
    assert "MaintenanceReport(" not in out
    assert out.splitlines()[0] == "partition maintenance: ok"
    assert "nothing to do" in out  # `paygate dev` made every partition at start-up


async def test_dlq_replay_of_an_id_that_is_no_dead_letter_fails(dev: DevStack) -> None:
    rc, out, err = await paygate(dev, "dlq", "replay", "999999")
    assert rc == 1
    assert "replayed 0 event(s)" in out
    assert "999999" in err and "not dead letters" in err


async def test_reconcile_prints_the_malformed_line_numbers(dev: DevStack) -> None:
    statement = dev.root / "malformed.csv"
    statement.write_text(
        "reference_number,amount,payment_date\n"
        "R-OK-1,10.00,2026-11-20\n"
        "R-BAD-AMOUNT,abc,2026-11-20\n"
        "R-OK-2,11.00,2026-11-20\n"
        "R-BAD-DATE,12.00,20.11.2026\n"
    )
    rc, out, err = await paygate(dev, "reconcile", str(statement))
    assert rc == 0, err
    assert "malformed 2" in out
    assert re.search(r"^  line 3: .*amount", out, re.MULTILINE), out
    assert re.search(r"^  line 5: .*date", out, re.MULTILINE), out


async def test_worker_help_names_the_workers() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "worker", "--help",
        env=bare_env(), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    for name in WORKERS:
        assert name in out.decode(), name
