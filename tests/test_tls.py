"""TLS without a terminating proxy: `paygate serve` with TLS_CERT_FILE / TLS_KEY_FILE."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TEST_SECRET
from workers.cli.devstack import free_port


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_serve_speaks_https_with_the_configured_certificate(
    stack: Any, db: Any, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    env = dict(
        os.environ, DATABASE_URL=stack.database_url, REDIS_URL=stack.redis_url,
        KAFKA_BOOTSTRAP_SERVERS=stack.kafka_bootstrap, WEBHOOK_SECRET=TEST_SECRET,
        PORT=str(port), TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key), LOG_LEVEL="WARNING",
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "serve"], env=env)
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(
                        f"https://127.0.0.1:{port}/health/live", ssl=trusted
                    ) as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                async with session.get(f"http://127.0.0.1:{port}/health/live") as resp:
                    await resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
