"""A real browser for the console tests: Playwright for Python driving Debian's
/usr/bin/chromium (never a downloaded browser). Without chromium the tests skip, except in
CI (CI=1), where tools/install-system-packages.sh has installed it and they must run."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PAYGATE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--disable-extensions",
]  # fmt: skip
SHOTS = Path(__file__).resolve().parents[4] / "docs" / "console"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is required in CI (tools/install-system-packages.sh)")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="paygate-chromium-")
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            await context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh tab with no cookies from an earlier test."""
    await browser.clear_cookies()
    tab = await browser.new_page()
    try:
        yield tab
    finally:
        await tab.close()


async def screenshot(page: Any, name: str) -> None:
    """Every page the tests visit is photographed; with PAYGATE_CONSOLE_SCREENSHOTS=1 the
    pictures replace docs/console/NAME.png (what docs/console.md shows)."""
    data = await page.screenshot(full_page=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PAYGATE_CONSOLE_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / f"{name}.png").write_bytes(data)
