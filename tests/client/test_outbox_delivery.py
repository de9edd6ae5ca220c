"""Delivering the outbox (outbox/delivery.py), fast: a fake client at its one seam, `make_client`.

Everything else is real: the outbox's files in tmp_path, the stored sessions (sessions.json), the
session objects and `request_slot`. test_outbox.py delivers to a real server; these tests pin down
what delivery asks for, in which order, what it records on disk and what it reports, so that
scripts/mutation can judge delivery.py in seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from whylogs_songbird.config import resolve_settings
from whylogs_songbird.errors import AuthError, SongbirdApiError, SongbirdError
from whylogs_songbird.models import SegmentTag
from whylogs_songbird.outbox import OutboxStorage, delivery
from whylogs_songbird.outbox import storage as S
from whylogs_songbird.session import SessionStore

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/outbox/delivery.py", "whylogs_songbird/outbox/storage.py")

HERE = "http://127.0.0.1:9"
THERE = "http://127.0.0.1:10"


class World:
    """What the fake clients were asked, in order, and which PUTs they refuse."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: dict[str, BaseException] = {}  # upload URL (or "create_session") -> raised
        self.closed: list[str] = []
        self.slots = 0


class FakeClient:
    """The HTTP seam: answers like the server, numbering sessions and slots s1, u1, ..."""

    def __init__(self, world: World, endpoint: str) -> None:
        self.world, self.endpoint = world, endpoint

    def _slot(self) -> SimpleNamespace:
        self.world.slots += 1
        n = self.world.slots
        return SimpleNamespace(id=f"u{n}", upload_url=f"{self.endpoint}/put/u{n}", observatory_url=f"obs/u{n}")

    def create_session(self, user_id: str) -> SimpleNamespace:
        self.world.calls.append(("create_session", self.endpoint))
        if "create_session" in self.world.refuse:
            raise self.world.refuse["create_session"]
        return SimpleNamespace(id="s-new")

    def create_dataset_profile_upload(self, session_id: str, timestamp: int, tags: list[SegmentTag]) -> Any:
        self.world.calls.append(("batch", self.endpoint, session_id, timestamp, [(t.key, t.value) for t in tags]))
        return self._slot()

    def create_reference_profile_upload(self, session_id: str, alias: str | None, timestamp: int) -> Any:
        self.world.calls.append(("reference", self.endpoint, session_id, alias, timestamp))
        return self._slot()

    def log_async(self, org: str, dataset: str, timestamp: int, tags: list[SegmentTag]) -> Any:
        self.world.calls.append(("log_async", org, dataset, timestamp, [(t.key, t.value) for t in tags]))
        return self._slot()

    def log_reference(self, org: str, dataset: str, alias: str | None, timestamp: int) -> Any:
        self.world.calls.append(("log_reference", org, dataset, alias, timestamp))
        return self._slot()

    def upload_profile(self, url: str, data: bytes) -> None:
        self.world.calls.append(("put", url, data))
        if url in self.world.refuse:
            raise self.world.refuse[url]

    def close(self) -> None:
        self.world.closed.append(self.endpoint)


@pytest.fixture
def world(monkeypatch, tmp_path) -> World:
    world = World()

    def make_client(settings, endpoint):
        assert settings.config_dir == tmp_path / "cfg"
        world.calls.append(("client", endpoint))
        return FakeClient(world, endpoint)

    monkeypatch.setattr(delivery, "make_client", make_client)
    # each module's own clock: delivery stamps attempts at 500.0, storage saves at 1.0, 2.0, ... (listing order)
    monkeypatch.setattr(delivery, "time", SimpleNamespace(time=lambda: 500.0))
    clock = iter(range(1, 100))
    monkeypatch.setattr(S, "time", SimpleNamespace(time=lambda: float(next(clock)), strftime=time.strftime))
    return world


@pytest.fixture
def outbox(tmp_path) -> OutboxStorage:
    return OutboxStorage(tmp_path / "outbox")


@pytest.fixture
def settings(tmp_path):
    return resolve_settings({"endpoint": HERE, "config_dir": tmp_path / "cfg", "max_retries": 0})


def save(outbox: OutboxStorage, data: bytes, endpoint: str = HERE, **extra: Any) -> S.OutboxEntry:
    options: dict[str, Any] = {"kind": "batch", "dataset_timestamp": 1000, "alias": None, "segment_tags": ()}
    options.update(extra)
    return outbox.save(endpoint=endpoint, data=data, error="down", **options)


def on_disk(outbox: OutboxStorage, entry: S.OutboxEntry) -> dict[str, Any]:
    return json.loads((outbox.directory / f"{entry.id}.json").read_text())


def test_each_entry_gets_a_slot_in_its_session_then_its_bytes_and_is_removed(world, outbox, settings, tmp_path):
    batch = save(outbox, b"one", segment_tags=(SegmentTag(key="city", value="Oslo"),), dataset_timestamp=1000)
    reference = save(outbox, b"two", kind="reference", alias="train", dataset_timestamp=2000)
    pinned = save(outbox, b"three", endpoint=THERE, pinned_session_id="p1", dataset_timestamp=3000)
    report = delivery.flush_outbox(outbox, settings)
    assert world.calls == [
        ("client", HERE),
        ("create_session", HERE),
        ("batch", HERE, "s-new", 1000, [("city", "Oslo")]),
        ("put", f"{HERE}/put/u1", b"one"),
        ("reference", HERE, "s-new", "train", 2000),
        ("put", f"{HERE}/put/u2", b"two"),
        ("client", THERE),
        ("batch", THERE, "p1", 3000, []),
        ("put", f"{THERE}/put/u3", b"three"),
    ]
    assert report.ok and report.failed == []
    assert [e.id for e in report.delivered] == [batch.id, reference.id, pinned.id]
    assert [(e.session_id, e.upload_id, e.upload_url, e.observatory_url) for e in report.delivered] == [
        ("s-new", "u1", f"{HERE}/put/u1", "obs/u1"),
        ("s-new", "u2", f"{HERE}/put/u2", "obs/u2"),
        ("p1", "u3", f"{THERE}/put/u3", "obs/u3"),
    ]
    assert [(e.attempts, e.last_attempt_at) for e in report.delivered] == [(1, 500.0)] * 3
    assert sorted(p.name for p in outbox.directory.iterdir()) == [".flush.lock"]
    assert world.closed == [HERE, THERE]
    store = SessionStore(tmp_path / "cfg")
    assert store.get(HERE) == "s-new" and store.get(THERE) is None  # a pinned session is not stored


def test_a_failed_entry_keeps_its_slot_and_error_the_rest_go_on_and_a_rerun_puts_to_that_slot(
    world, outbox, settings, caplog
):
    first, second, third = save(outbox, b"1"), save(outbox, b"2", alias="second"), save(outbox, b"3")
    world.refuse[f"{HERE}/put/u2"] = SongbirdError("connection refused")
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.outbox"):
        report = delivery.flush_outbox(outbox, settings)
    assert not report.ok
    assert [e.id for e in report.delivered] == [first.id, third.id]
    assert [(e.id, why) for e, why in report.failed] == [(second.id, "connection refused")]
    assert [r.getMessage() for r in caplog.records] == ["outbox: second not delivered yet: connection refused"]
    kept = on_disk(outbox, second)
    assert (kept["error"], kept["attempts"], kept["last_attempt_at"]) == ("connection refused", 1, 500.0)
    assert (kept["session_id"], kept["upload_id"], kept["upload_url"], kept["observatory_url"]) == (
        "s-new",
        "u2",
        f"{HERE}/put/u2",
        "obs/u2",
    )
    assert [e.id for e in outbox.entries()] == [second.id]

    del world.refuse[f"{HERE}/put/u2"]
    world.calls.clear()
    again = delivery.flush_outbox(outbox, settings)
    assert world.calls == [("client", HERE), ("put", f"{HERE}/put/u2", b"2")], "the same slot, no new one"
    assert again.ok and [(e.id, e.attempts, e.upload_id) for e in again.delivered] == [(second.id, 2, "u2")]
    assert outbox.entries() == []


def test_an_expired_upload_url_gets_a_new_slot_and_other_refusals_keep_the_old_one(world, outbox, settings, caplog):
    expired = save(outbox, b"e", alias="late", pinned_session_id="p1", slot=("p1", "old1", f"{HERE}/put/old1"))
    broken = save(outbox, b"b", alias="busy", pinned_session_id="p1", slot=("p1", "old2", f"{HERE}/put/old2"))
    world.refuse[f"{HERE}/put/old1"] = AuthError("signature expired", status=403, operation="upload_profile")
    world.refuse[f"{HERE}/put/old2"] = SongbirdApiError("server busy", status=503, operation="upload_profile")
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.outbox"):
        report = delivery.flush_outbox(outbox, settings)
    assert world.calls == [
        ("client", HERE),
        ("put", f"{HERE}/put/old1", b"e"),
        ("batch", HERE, "p1", 1000, []),
        ("put", f"{HERE}/put/u1", b"e"),
        ("put", f"{HERE}/put/old2", b"b"),
    ]
    assert [(e.id, e.upload_id) for e in report.delivered] == [(expired.id, "u1")]
    assert [(e.id, why) for e, why in report.failed] == [(broken.id, "server busy")]
    assert [r.getMessage() for r in caplog.records] == [
        "outbox: upload URL of late expired; requesting a new one",
        "outbox: busy not delivered yet: server busy",
    ]
    kept = on_disk(outbox, broken)
    assert (kept["upload_id"], kept["upload_url"], kept["attempts"]) == ("old2", f"{HERE}/put/old2", 1)


def test_dataset_entries_go_to_their_dataset_and_one_client_serves_each_target(world, outbox, settings):
    tags = (SegmentTag(key="k", value="v"),)
    save(outbox, b"a", dataset=("org-1", "ds-1"), segment_tags=tags, dataset_timestamp=1)
    save(outbox, b"b", dataset=("org-1", "ds-2"), kind="reference", alias="train", dataset_timestamp=2)
    save(outbox, b"c", pinned_session_id="p1", dataset_timestamp=3)
    save(outbox, b"d", pinned_session_id="p2", dataset_timestamp=4)
    save(outbox, b"e", pinned_session_id="p1", dataset_timestamp=5)
    half = save(outbox, b"f", dataset_timestamp=6)
    half.org_id = "org-1"  # an organization but no dataset: a guest session's entry
    outbox.write(half)
    report = delivery.flush_outbox(outbox, settings)
    assert report.ok and len(report.delivered) == 6
    assert [c for c in world.calls if c[0] != "put"] == [
        ("client", HERE),
        ("log_async", "org-1", "ds-1", 1, [("k", "v")]),
        ("client", HERE),
        ("log_reference", "org-1", "ds-2", "train", 2),
        ("client", HERE),
        ("batch", HERE, "p1", 3, []),
        ("client", HERE),
        ("batch", HERE, "p2", 4, []),
        ("batch", HERE, "p1", 5, []),
        ("client", HERE),
        ("create_session", HERE),
        ("batch", HERE, "s-new", 6, []),
    ]
    assert [e.session_id for e in report.delivered] == ["org-1/ds-1", "org-1/ds-2", "p1", "p2", "p1", "s-new"]
    assert len(world.closed) == 5


def test_only_for_picks_entries_and_retarget_moves_them_with_fresh_slots(world, outbox, settings):
    moved = save(outbox, b"m", pinned_session_id="p1", slot=("p1", "old", f"{HERE}/put/old"))
    there = save(outbox, b"t", endpoint=THERE, pinned_session_id="p9", slot=("p9", "kept", f"{THERE}/put/kept"))
    report = delivery.flush_outbox(outbox, settings, only_for=THERE)
    assert world.calls == [("client", THERE), ("put", f"{THERE}/put/kept", b"t")]
    assert [e.id for e in report.delivered] == [there.id] and [e.id for e in outbox.entries()] == [moved.id]

    world.calls.clear()
    world.refuse["create_session"] = KeyboardInterrupt("stopped while asking for a session")
    with pytest.raises(KeyboardInterrupt):
        delivery.flush_outbox(outbox, settings, retarget=THERE)
    assert world.closed == [THERE, THERE], "the client is closed even when the flush is interrupted"
    stored = on_disk(outbox, moved)  # the move was recorded before anything was asked of THERE
    assert (stored["endpoint"], stored["pinned_session_id"]) == (THERE, None)
    assert [stored[k] for k in ("session_id", "upload_id", "upload_url", "observatory_url")] == [None] * 4

    del world.refuse["create_session"]
    world.calls.clear()
    report = delivery.flush_outbox(outbox, settings, retarget=THERE)
    assert world.calls == [
        ("client", THERE),
        ("create_session", THERE),
        ("batch", THERE, "s-new", 1000, []),
        ("put", f"{THERE}/put/u1", b"m"),
    ]
    assert [(e.endpoint, e.session_id) for e in report.delivered] == [(THERE, "s-new")]


def test_a_retarget_to_the_entry_s_own_endpoint_keeps_its_slot(world, outbox, settings):
    entry = save(outbox, b"x", pinned_session_id="p1", slot=("p1", "old", f"{HERE}/put/old"))
    report = delivery.flush_outbox(outbox, settings, retarget=HERE)
    assert world.calls == [("client", HERE), ("put", f"{HERE}/put/old", b"x")]
    assert [(e.id, e.upload_id) for e in report.delivered] == [(entry.id, "old")]


def test_a_flush_waits_for_the_lock_only_as_long_as_it_is_told(world, outbox, settings):
    save(outbox, b"x")
    held, release = threading.Event(), threading.Event()

    def other_flush() -> None:
        with outbox.flush_lock():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=other_flush)
    holder.start()
    held.wait(10)
    timer = threading.Timer(0.3, release.set)  # a flush that waited would then go ahead
    timer.start()
    try:
        with pytest.raises(SongbirdError, match="Another flush"):
            delivery.flush_outbox(outbox, settings)  # by default: not at all
        assert world.calls == []
        assert delivery.flush_outbox(outbox, settings, lock_timeout=10).ok
    finally:
        release.set()
        holder.join()
        timer.cancel()
    assert outbox.entries() == []


def test_a_flush_stopped_during_the_put_has_recorded_the_slot_and_a_rerun_puts_there_again(world, outbox, settings):
    entry = save(outbox, b"x", pinned_session_id="p1")
    world.refuse[f"{HERE}/put/u1"] = KeyboardInterrupt("stopped during the PUT (it may have landed)")
    with pytest.raises(KeyboardInterrupt):
        delivery.flush_outbox(outbox, settings)
    stored = on_disk(outbox, entry)
    assert (stored["session_id"], stored["upload_id"], stored["upload_url"]) == ("p1", "u1", f"{HERE}/put/u1")
    del world.refuse[f"{HERE}/put/u1"]
    world.calls.clear()
    assert delivery.flush_outbox(outbox, settings).ok
    assert world.calls == [("client", HERE), ("put", f"{HERE}/put/u1", b"x")], "replaced in its slot, not sent twice"
