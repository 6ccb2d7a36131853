"""Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by Playwright, which
never downloads a browser. Without Chromium the tests skip, except under CI, where they fail.
Every page is kept on loopback: a request to any other address is refused and fails the test,
as does a script error on the page.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Route, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
# Form controls a screen reader could not name: no <label>, aria-label or aria-labelledby.
UNLABELLED_CONTROLS = """() => [...document.querySelectorAll("input, select, textarea")]
  .filter((el) => el.type !== "hidden")
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                  && !el.getAttribute("aria-labelledby"))
  .map((el) => el.outerHTML)"""
WIDTHS = "() => [document.documentElement.scrollWidth, window.innerWidth]"
# Text controls narrower than what they hold, or than a thumb: [id, visible px, content px].
CRAMPED_CONTROLS = """() => [...document.querySelectorAll("input[type=text], select")]
  .filter((el) => el.clientWidth < 120 || el.scrollWidth > el.clientWidth)
  .map((el) => [el.id, el.clientWidth, el.scrollWidth])"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture
def chromium() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if _in_ci():
        pytest.fail(f"{reason}; CI is set, so this is an error, not a skip", pytrace=False)
    pytest.skip(reason)


@dataclass
class Phone:
    page: Page
    outside: list[str] = field(default_factory=list)  # requests refused: not to 127.0.0.1
    script_errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def phone_browser(chromium: Path) -> AsyncIterator[Phone]:
    """A fresh headless Chromium (its own new profile) with one page at a phone's size, kept
    on loopback: any other address is refused and noted."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(viewport=PHONE)
            outside: list[str] = []

            async def loopback_only(route: Route) -> None:
                if urlsplit(route.request.url).hostname == "127.0.0.1":
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await context.route("**/*", loopback_only)
            phone = Phone(page=await context.new_page(), outside=outside)
            phone.page.on("pageerror", lambda error: phone.script_errors.append(str(error)))
            phone.page.set_default_timeout(15_000)
            yield phone
        finally:
            await browser.close()
    assert phone.outside == [], "the pages reached beyond 127.0.0.1"
    assert phone.script_errors == [], "the pages' scripts failed"
