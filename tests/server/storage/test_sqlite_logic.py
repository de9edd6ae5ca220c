"""Opening the embedded metadata store (server/storage/sqlite.py): where its files go, their modes,
its name, and a write that waits for the turn another process holds."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from pathlib import Path

import pytest

from whylogs_songbird.server.storage.sqlite import WRITE_LOCK_SUFFIX, SqliteMetadataStore

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/storage/sqlite.py")

SUFFIXES = ("", "-wal", "-shm", WRITE_LOCK_SUFFIX)


def modes(path: Path) -> dict[str, int]:
    return {suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) for suffix in SUFFIXES}


def test_a_store_makes_its_missing_directories_and_private_files(tmp_path):
    path = tmp_path / "a" / "b" / "songbird.db"
    store = SqliteMetadataStore(path)
    try:
        assert modes(path) == dict.fromkeys(SUFFIXES, 0o600)
        assert repr(store) == f"SqliteMetadataStore({str(path)!r})"
    finally:
        store.close()


def test_opening_a_store_makes_its_existing_files_private_again(tmp_path):
    path = tmp_path / "songbird.db"
    first = SqliteMetadataStore(path)
    try:
        for suffix in SUFFIXES:
            os.chmod(f"{path}{suffix}", 0o644)
        second = SqliteMetadataStore(path)
        second.close()
        assert modes(path) == dict.fromkeys(SUFFIXES, 0o600)
    finally:
        first.close()


def _waits_for_flock(lock_file: Path) -> bool:
    """Whether some thread waits for a flock of ``lock_file`` (a ``->`` line of /proc/locks)."""
    inode = f":{os.stat(lock_file).st_ino} "
    with open("/proc/locks") as locks:
        return any("->" in line and "FLOCK" in line and inode in line for line in locks)


def test_a_write_waits_while_another_process_holds_the_turn_at_writing(tmp_path):
    path = tmp_path / "songbird.db"
    store = SqliteMetadataStore(path)
    lock_file = Path(f"{path}{WRITE_LOCK_SUFFIX}")
    other = os.open(lock_file, os.O_RDWR)  # another open file: flock treats it as another process
    fcntl.flock(other, fcntl.LOCK_EX)
    writer = threading.Thread(target=store.add_api_key, args=("KeyId00001", "org-a", "0" * 64))
    try:
        writer.start()
        while writer.is_alive() and not _waits_for_flock(lock_file):
            writer.join(0.001)
        assert writer.is_alive(), "the write went ahead while another process held the turn"
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
        writer.join(10)
    try:
        assert not writer.is_alive() and store.find_api_key("KeyId00001") is not None
    finally:
        store.close()
