"""A background thread that does one pass of some store work every so often, until stopped.

The slot sweeper and the purge worker are both this: a daemon thread per server process, each pass
made of short transactions that check the stop flag between batches, and a failed pass logged and
tried again at the next one (unless the server is stopping, when the failure is expected).
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TypeVar

logger = logging.getLogger("whylogs_songbird.server")

W = TypeVar("W", bound="PeriodicWorker")


class PeriodicWorker:
    """Calls :meth:`run_once` every :attr:`interval` seconds on a daemon thread named :attr:`name`.

    ``run_first``: the first pass runs at start, not after the first interval. ``jitter``: each wait
    is 0.5 to 1 times the interval, so processes sharing a store do not work in step.
    """

    name = "songbird-background"
    #: What the log says when a pass fails.
    failure = "background work failed; trying again later"

    def __init__(self, interval: float, *, run_first: bool = False, jitter: bool = False) -> None:
        self.interval = interval
        self.run_first = run_first
        self.jitter = jitter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> None:
        """One pass; check :meth:`stopping` between batches."""
        raise NotImplementedError

    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self: W) -> W:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _wait(self) -> bool:
        """Wait one interval; True when stopped meanwhile."""
        factor = random.uniform(0.5, 1.0) if self.jitter else 1.0  # noqa: S311 - spreading, not secrecy
        return self._stop.wait(self.interval * factor)

    def _run(self) -> None:
        if not self.run_first and self._wait():
            return
        while True:
            try:
                self.run_once()
            except Exception:
                if self._stop.is_set():
                    return
                logger.warning(self.failure, exc_info=True)
            if self._wait():
                return


__all__ = ["PeriodicWorker"]
