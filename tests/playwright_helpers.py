"""Helpers shared by the headless-Chromium tests."""

from __future__ import annotations

import time
from typing import Any


def wait_until(page: Any, expression: str, arg: Any = None, timeout: float = 15_000) -> None:
    """Poll ``expression`` (a JS expression or function of ``arg``) until it is truthy.

    Playwright's ``wait_for_function`` evaluates its predicate with ``eval`` inside the page, which
    the server's Content-Security-Policy forbids; ``page.evaluate`` goes through the DevTools
    protocol and is not subject to it."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)
