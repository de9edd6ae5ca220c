"""The slot sweeper: a background thread that deletes upload slots never PUT once their URL expired.

Every server process runs one. Every ``interval`` seconds (spread out at random, so processes
sharing a store do not sweep in step) it calls :meth:`Store.sweep_expired_slots`: one indexed
query when there is nothing to do, and deletes in small batches otherwise, each a short
transaction that re-checks its condition in the database. Processes and hosts sweeping the same
store at once therefore never delete a slot that was stored meanwhile, and the thread never
holds anything a request waits for longer than one batch.

On a store other hosts share, the sweeper of one process of the team also scans for bytes without
a row (:meth:`Store.scan_orphans_if_due`) every few hours: a start does not, so it costs the same
however many profiles the store holds.
"""

from __future__ import annotations

from whylogs_songbird.server.background import PeriodicWorker
from whylogs_songbird.server.store import Store


class SlotSweeper(PeriodicWorker):
    """Sweeps ``store``'s expired slots every ``interval`` seconds (``grace_seconds``: see the store)."""

    name = "songbird-slot-sweeper"
    failure = "sweeping expired upload slots failed; trying again later"

    def __init__(self, store: Store, *, interval: float = 60.0, grace_seconds: int | None = None) -> None:
        super().__init__(interval, jitter=True)
        self.store = store
        self.grace_seconds = grace_seconds

    def __repr__(self) -> str:
        return f"SlotSweeper(interval={self.interval:g}, running={self._thread is not None})"

    def run_once(self) -> None:
        self.store.sweep_expired_slots(grace_seconds=self.grace_seconds, stop=self.stopping)
        if self.store.shared:  # a team host's start scans for no bytes without a row: one sweeper does, now and then
            self.store.scan_orphans_if_due(stop=self.stopping)


__all__ = ["SlotSweeper"]
