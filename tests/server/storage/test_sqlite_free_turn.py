"""``SqliteMetadataStore.free_turn`` (server/storage/sqlite.py): the store held without waiting, or not at all.

A second store on the same database file stands for another server process (its own lock-file
descriptor, so ``flock`` treats it as one); a second thread stands for another thread of this one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from whylogs_songbird.server.storage.sqlite import SqliteMetadataStore
from whylogs_songbird.server.store import NewUpload

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/storage/sqlite.py")


@pytest.fixture
def stores(tmp_path: Path):
    one = SqliteMetadataStore(tmp_path / "songbird.db")
    other = SqliteMetadataStore(tmp_path / "songbird.db")
    yield one, other
    one.close()
    other.close()


def _free_elsewhere(store: SqliteMetadataStore) -> bool:
    """What ``free_turn`` says in another thread (which then lets go of it again)."""
    said: list[bool] = []

    def look() -> None:
        with store.free_turn() as free:
            said.append(free)

    thread = threading.Thread(target=look)
    thread.start()
    thread.join(10)
    assert said, "free_turn waited"
    return said[0]


def _free_in(store: SqliteMetadataStore) -> bool:
    with store.free_turn() as free:
        return free


def test_a_free_store_is_held_for_the_turn_and_free_again_after(stores):
    one, other = stores
    with one.free_turn() as free:
        assert free
        assert not _free_elsewhere(one)  # another thread of this process
        assert not _free_in(other)  # another process
    assert _free_elsewhere(one)
    assert _free_in(other)


@pytest.mark.parametrize("holder", ["thread", "process"])
def test_a_held_store_is_not_free_and_nothing_is_held_then(stores, holder):
    one, other = stores
    holding, release = threading.Event(), threading.Event()
    target = one if holder == "thread" else other

    def hold() -> None:
        with target.free_turn() as free:
            assert free
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        with one.free_turn() as free:
            assert not free
    finally:
        release.set()
        thread.join(10)
    assert _free_in(one)  # a False turn took nothing that is not given back
    assert _free_in(other)


@pytest.mark.parametrize(
    "write",
    [
        lambda store: store.create_session("u"),
        lambda store: store.create_uploads(
            store.create_session("u").id, [NewUpload("batch", 1_700_000_000_000)], ttl_seconds=60
        ),
    ],
    ids=["session", "slots"],
)
def test_writes_in_a_turn_commit_and_keep_the_turn_to_its_end(stores, write: Callable[..., object]):
    one, other = stores
    with one.free_turn() as free:
        assert free
        written = write(one)
        # the write's own transaction took its turn at writing inside this one, and gave back
        # nothing: another process still finds the store taken
        assert not _free_in(other)
    assert written
    assert _free_in(other)
    assert other.session_count() == 1  # committed, seen by the other connection


def test_an_error_in_a_turn_gives_the_store_back(stores):
    one, other = stores
    with pytest.raises(RuntimeError), one.free_turn() as free:
        assert free
        raise RuntimeError("refused")
    assert _free_elsewhere(one)
    assert _free_in(other)


def test_a_closed_store_is_never_free(stores):
    one, _ = stores
    one.close()
    assert not _free_in(one)


def test_commits_in_a_turn_leave_the_checkpoint_to_the_next_commit_outside_one(stores):
    """A checkpoint writes and fsyncs the database: never on a caller that took a free turn to
    avoid waiting."""
    one, _ = stores

    def autocheckpoint() -> int:
        return int(one._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    usual = autocheckpoint()
    assert usual > 0
    with one.free_turn() as free:
        assert free
        one.create_session("u")
        assert autocheckpoint() == 0
    assert autocheckpoint() == usual
