"""Production-shaped servers (TLS, SASL, Sentinel, Cluster), one set per module.

They run in the default pass only: these tests start their own servers whatever
PAYGATE_TEST_SERVERS says, so running them again on the other server sets would prove
nothing new and cost a minute each pass."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.estate.certs import Certificates, make_certificates
from tests.estate.servers import missing_binaries
from tests.faults.conftest import faults  # noqa: F401 - the failover scenario's gateway
from tests.stack import server_set


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module", autouse=True)
def _estate_runs_once() -> None:
    if server_set() != "embedded":
        pytest.skip("estate servers are started by the tests themselves: default pass only")
    missing = missing_binaries()
    if missing:
        message = f"{', '.join(missing)} not found (tools/install-system-packages.sh)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def estate_root() -> Iterator[Path]:
    """A directory every server's user can traverse (Postgres runs as its own user)."""
    import shutil

    root = Path(tempfile.mkdtemp(prefix="paygate-estate-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def certs(estate_root: Path) -> Certificates:
    return make_certificates(estate_root / "certs")
