"""The outbox as storage (outbox.py): its files, listing, removal, drop and the flush lock.

test_outbox.py delivers entries to a real server; these tests pin down the storage itself, fast,
so that scripts/mutation can judge outbox.py in seconds. The one flush here goes nowhere: its
entries are for another endpoint, and a flush that tried one would meet a closed loopback port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest

from whylogs_songbird.config import resolve_settings
from whylogs_songbird.errors import SongbirdError
from whylogs_songbird.models import SegmentTag
from whylogs_songbird.outbox import Outbox, OutboxEntry
from whylogs_songbird.outbox import storage as O

#: scripts/mutation runs this file against the mutants of these modules
pytestmark = pytest.mark.mutation_fast("whylogs_songbird/outbox/storage.py")

HERE = "http://127.0.0.1:9"
THERE = "http://127.0.0.1:10"


def save(outbox: Outbox, data: bytes = b"profile", endpoint: str = HERE, **extra) -> OutboxEntry:
    options = {"kind": "batch", "dataset_timestamp": 1_700_000_000_000, "alias": None, "segment_tags": ()}
    options.update(extra)
    return outbox.save(endpoint=endpoint, data=data, error="connection refused", **options)


def names(outbox: Outbox) -> list[str]:
    return sorted(p.name for p in outbox.directory.iterdir())


def test_an_entry_is_two_files_and_holds_everything_flush_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(O.time, "time", lambda: 1_700_000_000.25)
    outbox = Outbox(tmp_path / "a" / "outbox")
    entry = save(
        outbox,
        b"\x00bytes",
        kind="reference",
        alias="train",
        segment_tags=(SegmentTag(key="city", value="Oslo"),),
        pinned_session_id="session-pinned",
        slot=("session-1", "ref-1", "http://127.0.0.1:9/v0/uploads/ref-1?expires=1&signature=ab"),
    )
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{12}", entry.id)
    assert names(outbox) == [f"{entry.id}.bin", f"{entry.id}.json"]  # no temporary file left
    assert (outbox.directory / f"{entry.id}.bin").read_bytes() == b"\x00bytes" == outbox.read_bytes(entry)
    stored = json.loads((outbox.directory / f"{entry.id}.json").read_text())
    assert stored == {
        "id": entry.id,
        "endpoint": HERE,
        "kind": "reference",
        "dataset_timestamp": 1_700_000_000_000,
        "alias": "train",
        "segment_tags": [["city", "Oslo"]],
        "created_at": 1_700_000_000.25,
        "error": "connection refused",
        "size": 6,
        "pinned_session_id": "session-pinned",
        "org_id": None,
        "dataset_id": None,
        "session_id": "session-1",
        "upload_id": "ref-1",
        "upload_url": "http://127.0.0.1:9/v0/uploads/ref-1?expires=1&signature=ab",
        "observatory_url": None,
        "attempts": 0,
        "last_attempt_at": None,
    }
    assert outbox.entries() == [entry] and list(outbox) == [entry] and len(outbox) == 1
    assert "signature" not in repr(entry)  # the presigned URL stays out of reprs and logs


def test_entries_are_listed_oldest_first_and_by_endpoint(tmp_path, monkeypatch):
    outbox = Outbox(tmp_path)
    clock = iter([300.0, 100.0, 200.0])
    monkeypatch.setattr(O.time, "time", lambda: next(clock))
    third, first, second = save(outbox), save(outbox, endpoint=THERE), save(outbox)
    assert [e.id for e in outbox.entries()] == [first.id, second.id, third.id]
    assert [e.id for e in outbox.entries(HERE)] == [second.id, third.id]
    assert [e.id for e in outbox.entries(THERE)] == [first.id]
    assert Outbox(tmp_path / "none").entries() == []


def test_broken_entries_are_skipped_with_a_warning_and_the_rest_still_listed(tmp_path, caplog):
    outbox = Outbox(tmp_path)
    saved = [save(outbox) for _ in range(3)]
    lost = min(saved, key=lambda e: e.id)  # listed first: the others come after it
    good = sorted((e for e in saved if e is not lost), key=lambda e: (e.created_at, e.id))
    (tmp_path / "0000-broken.json").write_text("{not json")  # listed before everything
    (tmp_path / f"{lost.id}.bin").unlink()
    with caplog.at_level(logging.WARNING, logger="whylogs_songbird.outbox"):
        assert outbox.entries() == good
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("outbox: skipping unreadable entry 0000-broken.json (Expecting property name")
    assert messages[1:] == [f"outbox: entry {lost.id} has lost its profile file; skipping it"]


def test_remove_takes_the_json_first_and_may_be_repeated(tmp_path):
    outbox = Outbox(tmp_path)
    entry, kept = save(outbox), save(outbox)
    outbox.remove(entry)
    assert names(outbox) == [f"{kept.id}.bin", f"{kept.id}.json"]
    outbox.remove(entry)  # already gone: nothing to do
    (tmp_path / f"{kept.id}.bin").unlink()
    outbox.remove(kept)  # a half-removed entry (its .bin gone) is finished off
    assert names(outbox) == []


def test_drop_by_id_or_everything_and_an_unknown_id_deletes_nothing(tmp_path):
    outbox = Outbox(tmp_path)
    a, b, c = save(outbox), save(outbox), save(outbox)
    with pytest.raises(SongbirdError) as caught:
        outbox.drop([a.id, "nope", "gone"])
    assert str(caught.value) == f"No outbox entry 'nope', 'gone' in {tmp_path}: `songbird outbox list` shows the ids."
    assert len(outbox) == 3
    assert outbox.drop([b.id, a.id, b.id]) == [b, a]  # each once, in the order asked
    assert outbox.entries() == [c]
    assert outbox.drop() == [c] and outbox.entries() == [] and names(outbox) == [".flush.lock"]


@contextlib.contextmanager
def lock_held_elsewhere(outbox: Outbox) -> Iterator[None]:
    """The flush lock held by another thread, which lets go 0.3 s in: a caller that waited for it
    would then go ahead, one that does not wait fails at once."""
    held, release = threading.Event(), threading.Event()

    def flushing() -> None:
        with outbox.flush_lock():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=flushing)
    holder.start()
    held.wait(10)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    try:
        yield
    finally:
        release.set()
        holder.join()
        timer.cancel()


def test_drop_refuses_at_once_while_a_flush_holds_the_lock(tmp_path):
    outbox = Outbox(tmp_path)
    entry = save(outbox)
    with lock_held_elsewhere(outbox):
        with pytest.raises(SongbirdError) as caught:
            outbox.drop()
        assert str(caught.value) == f"Another flush of {tmp_path} is running; wait for it to finish and try again."
        assert outbox.entries() == [entry]
    assert outbox.drop() == [entry]


def test_flush_delivers_only_the_endpoint_asked_for_and_does_not_wait_for_the_lock(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    entry = save(outbox, endpoint=HERE)  # port 9 on loopback: nothing listens
    settings = resolve_settings({"endpoint": HERE, "config_dir": tmp_path / "cfg", "max_retries": 0})
    report = outbox.flush(settings, endpoint=THERE)
    assert report.ok and report.delivered == [] and outbox.entries() == [entry]
    with lock_held_elsewhere(outbox), pytest.raises(SongbirdError, match="Another flush"):
        outbox.flush(settings, endpoint=THERE)
