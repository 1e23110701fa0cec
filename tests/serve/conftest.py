"""Fixtures of the web view's browser tests: one headless chromium per module, real servers.

The browser is Debian's chromium driven by Playwright (gridman/testing/browser.py); the
servers are real ``gridman serve`` child processes on 127.0.0.1, port 0. Projects are built
once per module (they take seconds), by gridman/testing/webproject.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from gridman.testing.browser import browser_missing, launch_browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium for the whole module (starting one takes about a second)."""
    if browser_missing():
        pytest.skip(browser_missing())  # the module's needs_browser mark says why, or fails
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch_browser(playwright)
        yield launched
        launched.close()


class PageErrors(list):  # type: ignore[type-arg]
    """The uncaught script errors a page raised (a test fails on any)."""


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page in a fresh context (no cookies or cache shared between tests); the test
    fails when the page's script raised an uncaught error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    new = context.new_page()
    new.set_default_timeout(20_000)
    errors = PageErrors()
    new.on("pageerror", lambda error: errors.append(str(error)))
    yield new
    context.close()
    assert not errors, f"the page raised: {errors}"
