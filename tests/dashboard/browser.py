"""What the browser tests share: Debian's Chromium driven by Playwright (never a downloaded browser),
a real `trellis serve` started for the test, and where screenshots go.

Chromium comes from Debian (`apt-get install -y chromium chromium-driver`, done by `.ci/run`): when it
is missing the tests fail with that instruction, they are never skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ADMIN_KEY, JWT_SECRET
from tests.processes import Process, start_server, wait_ready

CHROMIUM = os.environ.get("TRELLIS_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
# Screenshots: kept after the run (CI can collect them), under the repository unless told otherwise.
STARTUP_SECONDS = 180.0
ARTIFACTS = Path(os.environ.get("TRELLIS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"


def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if path is None:
        pytest.fail(
            f"Chromium is missing ({CHROMIUM}): the dashboard's browser tests need Debian's Chromium. "
            "Install it with `apt-get install -y chromium chromium-driver` (.ci/run does), or point "
            "TRELLIS_TEST_CHROMIUM at a Chromium binary."
        )
    return path


def artifacts(test_name: str) -> Path:
    folder = ARTIFACTS / test_name
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of {test_name}: {folder}")
    return folder


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TRELLIS_DATA_DIR": str(tmp_path / "data"),
        "TRELLIS_JWT_SECRET": JWT_SECRET,
        "TRELLIS_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "TRELLIS_LOG_LEVEL": "WARNING",
        "TRELLIS_DASHBOARD__REFRESH_SECONDS": "0.5",
        # A sample a second and an evaluation a second: the overview and alerts move within the test.
        "TRELLIS_METRICS__INTERVAL_SECONDS": "1",
        "TRELLIS_ALERTS__EVALUATE_SECONDS": "1",
        **extra,
    }


@asynccontextmanager
async def trellis_serve(tmp_path: Path, **extra: str) -> AsyncIterator[Process]:
    """A real `trellis serve` on a free port, ready; its output is shown if the test fails."""
    server = start_server("serve", server_env(tmp_path, **extra), tmp_path)
    try:
        # Importing the app and migrating a fresh database took 80 s to /ready at load 15 on the
        # shared 2-core machine (the tour failed three times in a row at the default 60 s there).
        await wait_ready(server, deadline_seconds=STARTUP_SECONDS)
        yield server
    except BaseException:
        print(server.output())
        raise
    finally:
        server.stop()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        # --no-sandbox: the tests run as root (CI does), where Chromium's sandbox cannot start.
        browser = await playwright.chromium.launch(executable_path=path, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in_with_key(page: Page, base_url: str, key: str, path: str = "/dashboard") -> None:
    await page.goto(base_url + path)
    await page.wait_for_url("**/dashboard/sign-in**")
    await page.fill("#key-form input[name=api_key]", key)
    await page.click("#key-form button[type=submit]")
    await page.wait_for_url(f"**{path}")
