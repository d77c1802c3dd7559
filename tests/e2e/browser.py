"""Headless Chromium for end-to-end tests: Debian's /usr/bin/chromium driven by
Playwright's async API (the PyPI package's driver only; never a downloaded browser).

`make test` installs both (the Makefile's browser-tools stamp). Without either, the
tests that use these fixtures skip and say which one is missing.

    from tests.e2e.browser import browser_page, chromium, new_page, screenshot

    async def test_x(browser_page: Page) -> None:
        await browser_page.goto(url)
        await screenshot(browser_page, "x-start")  # test-artifacts/x-start.png

- `chromium`: a launched `Browser`, one per test, closed after it.
- `browser_page`: a `Page` in a fresh context of it (own cookies and storage).
- `new_page(browser)`: another fresh context's page: a second person.
- `screenshot(page, name)`: a full-page PNG in `test-artifacts/` at the repo root.
"""

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
TIMEOUT_MS = 10_000
"""For each page action: a missing element fails the test in 10 s, not Playwright's 30."""

# Without the background-networking flags Chromium keeps trying to reach Google's hosts,
# which this machine's closed network refuses. Playwright gives each launch a new
# empty profile (--user-data-dir) of its own and deletes it on close.
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
async def chromium() -> AsyncIterator["Browser"]:
    """Debian's Chromium, headless, launched for one test (about half a second)."""
    async_api = pytest.importorskip(
        "playwright.async_api",
        reason="the playwright package is not installed (`make test` installs it)",
    )
    if not CHROMIUM.is_file():
        pytest.skip(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium as root "
            "(or: apt-get install --no-install-recommends chromium)"
        )
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(FLAGS), timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: "Browser") -> "Page":
    """A page in a new browser context: cookies, storage and cache of its own."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    return await context.new_page()


@pytest.fixture
async def browser_page(chromium: "Browser") -> "Page":
    return await new_page(chromium)


async def screenshot(page: "Page", name: str) -> Path:
    """Saves the whole page as test-artifacts/NAME.png (created on demand); returns it."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / (re.sub(r"[^A-Za-z0-9._-]+", "-", name) + ".png")
    await page.screenshot(path=path, full_page=True)
    return path
