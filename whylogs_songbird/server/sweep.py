"""The slot sweeper: a background thread that deletes upload slots never PUT once their URL expired.

Every server process runs one. Every ``interval`` seconds (spread out at random, so processes
sharing a store do not sweep in step) it calls :meth:`Store.sweep_expired_slots`: one indexed
query when there is nothing to do, and deletes in small batches otherwise, each a short
transaction that re-checks its condition in the database. Processes and hosts sweeping the same
store at once therefore never delete a slot that was stored meanwhile, and the thread never
holds anything a request waits for longer than one batch.
"""

from __future__ import annotations

import logging
import random
import threading

from whylogs_songbird.server.store import Store

logger = logging.getLogger("whylogs_songbird.server")


class SlotSweeper:
    """Sweeps ``store``'s expired slots every ``interval`` seconds (``grace_seconds``: see the store)."""

    def __init__(self, store: Store, *, interval: float = 60.0, grace_seconds: int | None = None) -> None:
        self.store = store
        self.interval = interval
        self.grace_seconds = grace_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SlotSweeper(interval={self.interval:g}, running={self._thread is not None})"

    def start(self) -> SlotSweeper:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="songbird-slot-sweeper", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval * random.uniform(0.5, 1.0)):  # noqa: S311 - spreading, not secrecy
            try:
                self.store.sweep_expired_slots(grace_seconds=self.grace_seconds, stop=self._stop.is_set)
            except Exception:
                if self._stop.is_set():
                    return
                logger.exception("sweeping expired upload slots failed; trying again later")


__all__ = ["SlotSweeper"]
