"""Operation counters (what ``/_local/stats`` answers): counted in memory without blocking, written
to the store in batches by one background thread per process, so every worker process and host
adds to the same numbers."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable

logger = logging.getLogger("whylogs_songbird.server")

#: Operation counts reach the shared store within about this many seconds: one write per batch,
#: not one transaction per request (see :meth:`OperationCounts.count`).
COUNT_FLUSH_SECONDS = 0.1


class OperationCounts:
    """The counts of this process not written yet, and the thread that writes them with ``write``."""

    def __init__(self, write: Callable[[dict[str, int]], None]) -> None:
        self._write = write
        self._flusher_pid = 0
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        # held across a batch's write, so a reader flushing first never reads the store while
        # another thread's batch is taken from memory but not yet written (it would miss those counts)
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        #: set by a count not written yet: the flusher sleeps until then (an idle server never wakes it)
        self._counted = threading.Event()
        self._flusher: threading.Thread | None = None

    def count(self, operation: str) -> None:
        """Count one call of ``operation``; never blocks on the store, so the event loop may call it."""
        with self._lock:
            self._pending[operation] += 1
            self._counted.set()
            if self._flusher is None or self._flusher_pid != os.getpid():
                self._flusher_pid = os.getpid()
                self._flusher = threading.Thread(target=self._flush_loop, name="songbird-counts", daemon=True)
                self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            self._counted.wait()
            if self._stop.wait(COUNT_FLUSH_SECONDS):  # the counts of that moment go in one write
                return
            self._counted.clear()
            try:
                self.flush()
            except Exception:  # the store went away (closing): the counts are kept for the next try
                if self._stop.is_set():
                    return
                self._counted.set()  # tried again in a moment
                logger.exception("writing operation counts failed")

    def flush(self) -> None:
        """Write the counts made in this process and not yet in the store (kept when the write fails)."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, Counter()
            if not pending:
                return
            try:
                self._write(dict(pending))
            except BaseException:
                with self._lock:
                    self._pending.update(pending)
                raise

    def clear(self) -> None:
        """Drop the counts not written yet."""
        with self._lock:
            self._pending.clear()

    def close(self) -> None:
        """Stop the writing thread and write what is left."""
        self._stop.set()
        self._counted.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(5)
        self.flush()
