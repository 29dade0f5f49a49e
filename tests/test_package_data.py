"""The console's templates and static files ship inside the wheel, so the Dockerfile's
non-editable install (`pip install .`) serves the same pages as a checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = ROOT / "gateway" / "http" / "console"


@pytest.mark.timeout(300)
def test_the_wheel_carries_every_template_and_static_file(tmp_path: Path) -> None:
    # A clean copy, as the Dockerfile's build stage has: no egg-info left by an editable
    # install, whose file list would put the data files in even without package-data.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("gateway", "workers"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(out), str(src)],
        check=True, cwd=tmp_path, timeout=280,
    )  # fmt: skip
    (wheel,) = out.glob("paygate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(p.relative_to(ROOT))
        for folder in ("templates", "static")
        for p in (CONSOLE / folder).iterdir()
        if p.is_file()
    }
    assert expected, "no console files found"
    assert expected <= names, sorted(expected - names)
    assert "gateway/presets/stripe.toml" in names
