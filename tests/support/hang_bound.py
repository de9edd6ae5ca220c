"""A bound on how long a test waits for what broken code may never do.

scripts/mutation sets ``SONGBIRD_TEST_HANG_SECONDS`` (6): a mutant that stops a worker from ever
answering would otherwise hold its slot for the test's whole deadline (20-60 s), or until mutmut
cuts it off, and the test fails either way. Unset (CI, a developer's run on a loaded machine) the
tests keep their own deadlines. Read at import: the ``isolated_settings`` fixture removes every
``SONGBIRD_`` variable while a test runs.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Seconds; 0: no bound.
HANG_SECONDS = float(os.environ.get("SONGBIRD_TEST_HANG_SECONDS") or 0)


@contextmanager
def hang_watchdog() -> Iterator[None]:
    """With a bound set: a block that outlasts it ends the process (exit code 1, every thread's
    traceback on stderr), for code that loops or blocks where no wait of the test's own can give
    up. pytest cancels it when a test fails (faulthandler plugin); the block ends it otherwise."""
    if HANG_SECONDS <= 0:
        yield
        return
    rearm_hang_watchdog()
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def rearm_hang_watchdog() -> None:
    """With a bound set: the watchdog armed (again) for the bound's full length from now."""
    if HANG_SECONDS > 0:
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.__stderr__)
