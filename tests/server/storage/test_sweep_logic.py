"""The slot sweeper (whylogs_songbird/server/sweep.py) on the real embedded store.

One pass is driven by hand (``run_once``): slots whose URL expired more than the grace ago go,
younger ones and stored ones stay; a stopping sweeper deletes nothing. The thread itself is only
started and stopped (the periodic loop is background.py's).
"""

from __future__ import annotations

import pytest
from stored_profiles import store_profile_bytes

from whylogs_songbird.server.store import SWEEP_GRACE_SECONDS, NewUpload, Store
from whylogs_songbird.server.sweep import SlotSweeper

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/sweep.py")


def slot(store: Store, session_id: str, ttl: int) -> str:
    return store.create_uploads(session_id, [NewUpload("reference")], ttl_seconds=ttl)[0].id


def test_a_pass_deletes_the_slots_expired_longer_than_the_grace(store):
    session_id = store.create_session("user").id
    old = slot(store, session_id, ttl=-100)  # expired 100 s ago
    young = slot(store, session_id, ttl=-5)  # expired 5 s ago: within the grace
    open_one = slot(store, session_id, ttl=900)
    stored = slot(store, session_id, ttl=-100)
    store_profile_bytes(store, stored, b"abc")
    SlotSweeper(store, grace_seconds=30).run_once()
    assert store.get_upload(old) is None
    assert all(store.get_upload(u) is not None for u in (young, open_one, stored))


def test_without_a_grace_the_store_s_default_applies(store):
    session_id = store.create_session("user").id
    within = slot(store, session_id, ttl=-(SWEEP_GRACE_SECONDS - 60))
    past = slot(store, session_id, ttl=-(SWEEP_GRACE_SECONDS + 60))
    SlotSweeper(store).run_once()
    assert store.get_upload(within) is not None and store.get_upload(past) is None


def test_a_stopping_sweeper_deletes_nothing(store):
    session_id = store.create_session("user").id
    old = slot(store, session_id, ttl=-100)
    sweeper = SlotSweeper(store, grace_seconds=0)
    sweeper.stop()  # never started: only asked to stop
    sweeper.run_once()
    assert store.get_upload(old) is not None


def test_the_sweeper_s_settings_and_repr(store):
    sweeper = SlotSweeper(store)
    assert (sweeper.interval, sweeper.grace_seconds, sweeper.jitter, sweeper.run_first) == (60.0, None, True, False)
    assert sweeper.name == "songbird-slot-sweeper"
    assert sweeper.failure == "sweeping expired upload slots failed; trying again later"
    assert repr(sweeper) == "SlotSweeper(interval=60, running=False)"
    other = SlotSweeper(store, interval=2.5, grace_seconds=7)
    assert (other.interval, other.grace_seconds) == (2.5, 7)
    assert repr(other.start()) == "SlotSweeper(interval=2.5, running=True)"
    other.stop()
    assert repr(other) == "SlotSweeper(interval=2.5, running=False)"


class _SharedStoreSeam:
    """A team store as the sweeper sees it: records what each call was given."""

    shared = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def sweep_expired_slots(self, *, grace_seconds, stop):
        self.calls.append(("sweep", stop))

    def scan_orphans_if_due(self, *, stop):
        self.calls.append(("scan", stop))


def test_on_a_shared_store_the_orphan_scan_is_told_when_the_sweeper_stops():
    seam = _SharedStoreSeam()
    sweeper = SlotSweeper(seam, grace_seconds=5)  # type: ignore[arg-type]
    sweeper.run_once()
    assert [name for name, _ in seam.calls] == ["sweep", "scan"]
    scan_stop = seam.calls[1][1]
    assert callable(scan_stop) and scan_stop() is False
    sweeper.stop()
    assert scan_stop() is True
