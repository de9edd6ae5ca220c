"""Helpers shared by the headless-Chromium tests: Debian's chromium, the browser and screenshot
fixtures, a tab that records console errors and requested hosts, and a CSP-safe ``wait_until``.

A test module takes the fixtures by importing them (``from playwright_helpers import browser``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Mark a module with ``pytestmark = needs_chromium``.
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def wait_until(page: Any, expression: str, arg: Any = None, timeout: float = 15_000) -> None:
    """Poll ``expression`` (a JS expression or function of ``arg``) until it is truthy.

    Playwright's ``wait_for_function`` evaluates its predicate with ``eval`` inside the page, which
    the server's Content-Security-Policy forbids; ``page.evaluate`` goes through the DevTools
    protocol and is not subject to it."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless chromium, closed after the module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $SONGBIRD_SCREENSHOTS_DIR (scripts/screenshots), else a temporary dir."""
    chosen = os.environ.get("SONGBIRD_SCREENSHOTS_DIR")
    target = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


class Watched:
    """A page with its console errors, page errors and requested URLs recorded."""

    def __init__(self, browser: Any, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def check_clean(self) -> None:
        """No console or page error, and nothing requested from a host other than 127.0.0.1."""
        assert self.errors == [], self.errors
        hosts = {urlsplit(url).hostname for url in self.requests if not url.startswith(("data:", "about:", "blob:"))}
        assert hosts == {"127.0.0.1"}, self.requests

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    """A fresh 1280×900 tab, closed after the test."""
    tab = Watched(browser)
    yield tab
    tab.close()
