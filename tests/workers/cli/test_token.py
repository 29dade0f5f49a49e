"""`paygate token`: a lifetime above OPS_TOKEN_MAX_TTL_SECONDS (a day by default) is
refused, and what it mints carries an id that can be revoked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.security import tokens

SECRET = "cli-test-admin-secret-0123456789abcdef"


def paygate(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "ADMIN_JWT_SECRET": SECRET, "PAYGATE_DATA_DIR": str(tmp_path),
               "PROMETHEUS_MULTIPROC_DIR": "", **env}  # fmt: skip
    code = "from workers.cli.main import main; raise SystemExit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=environ, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_a_token_lives_at_most_a_day_by_default(tmp_path: Path) -> None:
    week = paygate(tmp_path, "token", "--role", "ops:read", "--ttl", str(7 * 86400))
    assert week.returncode == 2 and week.stdout == ""
    assert "OPS_TOKEN_MAX_TTL_SECONDS (86400)" in week.stderr

    day = paygate(tmp_path, "token", "--role", "ops:read", "--ttl", "86400", "--subject", "ann")
    assert day.returncode == 0, day.stderr
    claims = tokens.verify(day.stdout.strip(), SECRET)
    assert claims.principal.subject == "ann"
    assert f"token id (jti) {claims.token_id}" in day.stderr

    shorter = paygate(tmp_path, "token", "--role", "ops:read", "--ttl", "7200",
                      OPS_TOKEN_MAX_TTL_SECONDS="3600")  # fmt: skip
    assert shorter.returncode == 2
